"""``python -m framework``: the command line of :mod:`framework.cli`."""

from __future__ import annotations

from framework.cli import main

if __name__ == "__main__":
    main(prog_name="python -m framework")
