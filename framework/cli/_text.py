r"""Showing strings the CLI did not write itself: file, cell and topic names, remote errors.

Such strings come from the command line, from file names or from Redis (whoever can
write there chooses them), so two things must not happen when one is printed:

* rich must not read it as markup: ``[bold]x.bin`` would print as a bold ``x.bin``
  and a cell named ``[/]`` would raise ``MarkupError``;
* a control character must not reach the terminal: ``\x1b[2J`` in a file name would
  clear the screen, and ``\r`` could hide what came before it on the line.

:func:`visible` writes every non-printable character the way ``repr()`` does, and
:func:`shown` also escapes rich markup, for strings interpolated into
``console.print`` text.
"""

from __future__ import annotations

from rich.markup import escape

__all__ = ["shown", "visible"]


def visible(text: object) -> str:
    r"""``str(text)`` with every non-printable character written as ``repr()`` writes it.

    Printable characters, non-ASCII letters included, stay as they are; a control
    character such as ESC becomes the four characters ``\x1b``, a newline ``\n``.

    Args:
        text: Anything; it is converted with ``str()`` first.

    Returns:
        Text that is safe to write to a terminal (with ``click.echo``, say).
    """
    value = str(text)
    if value.isprintable():  # the common case, in one C-level pass
        return value
    return "".join(char if char.isprintable() else _escaped(char) for char in value)


def _escaped(char: str) -> str:
    r"""``char`` as ``repr()`` writes it; a byte of a file name that is not UTF-8 as ``\xff``.

    Python reads such a byte into a lone surrogate (``os.fsdecode``), which ``repr()``
    would show as ``\udcff``.
    """
    if "\udc80" <= char <= "\udcff":
        return f"\\x{ord(char) - 0xDC00:02x}"
    return repr(char)[1:-1]


def shown(text: object) -> str:
    """:func:`visible` text with rich markup escaped, to interpolate into ``console.print``.

    Args:
        text: Anything; it is converted with ``str()`` first.

    Returns:
        Text that rich prints literally, character for character.
    """
    return escape(visible(text))
