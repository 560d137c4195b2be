"""Command line: ``framework <command>`` (or ``python -m framework <command>``).

Every command that talks to Redis takes ``--url`` (default: the ``FRAMEWORK_REDIS_URL``
environment variable). ``demo`` and ``check`` start a throw-away server when neither is
set. Failures end with one ``Error: ...`` line and exit status 1 (2 for usage errors);
Ctrl-C exits with 130 after cleaning up.

Commands:
    demo: The main job end to end: an object stream and a byte stream across processes.
    send / recv: Move files between machines through a shared Redis (byte streams).
    inspect: What the framework holds in a Redis: topics, transfers, cells, objects.
    bench: Run the benchmark suite and print its tables.
    check: Connectivity and one timed round trip.
"""

from __future__ import annotations

import logging

import click

from framework import __version__
from framework.cli._bench import bench
from framework.cli._check import check
from framework.cli._common import FrameworkGroup
from framework.cli._demo import demo
from framework.cli._files import recv, send
from framework.cli._inspect import inspect_command

__all__ = ["main"]


@click.group(cls=FrameworkGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="framework")
@click.option("-v", "--verbose", count=True, help="Log progress (-v) or everything (-vv).")
def main(verbose: int) -> None:
    """Move Python objects and byte streams between processes through Redis."""
    if verbose:
        level = logging.INFO if verbose == 1 else logging.DEBUG
        logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


for _command in (demo, send, recv, inspect_command, bench, check):
    main.add_command(_command)
