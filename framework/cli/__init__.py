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
from framework.cli._common import FrameworkGroup, ScrubbingFormatter, run_secrets
from framework.cli._demo import demo
from framework.cli._inspect import inspect_command
from framework.cli._recv import recv
from framework.cli._send import send

__all__ = ["main"]

_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


@click.group(cls=FrameworkGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="framework")
@click.option("-v", "--verbose", count=True, help="Log progress (-v) or everything (-vv).")
@click.pass_context
def main(ctx: click.Context, verbose: int) -> None:
    """Move Python objects and byte streams between processes through Redis."""
    if verbose:
        handler = logging.StreamHandler()
        # Log lines quote URLs, errors and names too: the same masking as error lines.
        handler.setFormatter(ScrubbingFormatter(run_secrets(ctx), _LOG_FORMAT))
        level = logging.INFO if verbose == 1 else logging.DEBUG
        logging.basicConfig(level=level, handlers=[handler])


for _command in (demo, send, recv, inspect_command, bench, check):
    main.add_command(_command)
