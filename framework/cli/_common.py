"""What every command shares: the ``--url`` option, one-line errors, exit codes, consoles.

Errors: a framework error, an OS error (a missing file, say) or anything unexpected ends
the command with exit status 1 and a single ``Error: ...`` line on stderr, never a
traceback (``-vv`` logs the traceback of an unexpected error). Ctrl-C exits with 130
once the command's context managers have cleaned up what it created. Every error
message and every log line passes through :class:`Secrets`, which masks anything in the
``--url`` (or ``FRAMEWORK_REDIS_URL``) that may be a password, encoded or not, also in a
URL too malformed to parse; control characters in messages are made visible.
"""

from __future__ import annotations

import logging
import math
import re
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    ProgressColumn,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from framework.cli._text import shown, visible
from framework.connection import RedisConnection
from framework.embedded import EmbeddedRedis
from framework.exceptions import FrameworkError
from framework.settings import ENV_VAR, MASK, MAX_TIMEOUT, RedisSettings, password_candidates

__all__ = [
    "TIMEOUT",
    "Bars",
    "FiniteFloat",
    "FrameworkGroup",
    "ScrubbingFormatter",
    "Secrets",
    "cli_settings",
    "connect",
    "console",
    "echo_problem",
    "require_url",
    "run_secrets",
    "scrub",
    "secrets_of",
    "transfer_bars",
    "url_option",
]

logger = logging.getLogger("framework.cli")

#: Exit status after Ctrl-C (128 + SIGINT), as shells report it.
EXIT_INTERRUPTED = 130
#: Exit status after SIGTERM (128 + SIGTERM): what `kill`, `timeout` and `docker stop` send.
EXIT_TERMINATED = 143


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived: unwinds like Ctrl-C, so every command cleans up as it does then."""


def _terminate(signum: int, frame: Any) -> None:
    raise Terminated


@contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """Turn SIGTERM into :class:`Terminated` while the block runs (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


#: Tables and progress go to stdout; ``Error:`` lines go to stderr (through click).
#: No emoji codes: a file named ``:fire:.bin`` is printed as it is called. Lines are not
#: wrapped (the terminal does it): piped into a log or a script, a long path in a message
#: stays on one line, so it can be searched for and copied.
console = Console(highlight=False, emoji=False, soft_wrap=True)

F = TypeVar("F", bound=Callable[..., Any])

_SECRETS_KEY = "framework.secrets"


def secrets_of(url: str) -> set[str]:
    """Everything in ``url`` that may be a password, in every form a message may show it.

    :func:`~framework.settings.password_candidates`, plus each form as :func:`visible`
    prints it (a password with control characters in it).
    """
    return {form for raw in password_candidates(url) for form in (raw, visible(raw))}


class Secrets:
    """The passwords this run was given, and the masking of them in any text."""

    def __init__(self) -> None:
        self._known: list[str] = []

    def add(self, url: str) -> None:
        """Remember every password form in ``url`` (see :func:`secrets_of`)."""
        # Longest first: a password that contains another must be masked whole.
        self._known = sorted(set(self._known) | secrets_of(url), key=len, reverse=True)

    def mask(self, text: str) -> str:
        """``text`` with every remembered password replaced by ``***``.

        A password shorter than :data:`_ANYWHERE` characters is masked only where a URL
        holds it (``:password@``, ``password=...``): replaced everywhere, ``e`` or ``0``
        garbled every message ("Auth***nticationFail***d", "127.***.***.1") and the
        pattern of masks spelled the password out.
        """
        for secret in self._known:
            if len(secret) >= _ANYWHERE:
                text = text.replace(secret, MASK)
            else:
                text = _in_credentials(secret).sub(MASK, text)
        return text


#: Passwords at least this long are masked wherever they appear.
_ANYWHERE = 6


def _in_credentials(secret: str) -> re.Pattern[str]:
    """``secret`` where a URL holds a password: after ``:`` before ``@``, or as an option."""
    escaped = re.escape(secret)
    return re.compile(rf"(?<=:){escaped}(?=@)|(?<==){escaped}(?=[&#\s'\"]|$)")


class ScrubbingFormatter(logging.Formatter):
    """Log lines (tracebacks included) with passwords masked and control characters shown."""

    def __init__(self, secrets: Secrets, fmt: str) -> None:
        super().__init__(fmt)
        self.secrets = secrets

    def format(self, record: logging.LogRecord) -> str:
        """Format ``record`` as usual, then clean every line of it."""
        text = self.secrets.mask(super().format(record))
        return "\n".join(visible(line) for line in text.split("\n"))


def run_secrets(ctx: click.Context) -> Secrets:
    """The :class:`Secrets` of this command line (one per run, kept by the root context)."""
    found: Secrets = ctx.find_root().meta.setdefault(_SECRETS_KEY, Secrets())
    return found


def _remember_password(ctx: click.Context, _: click.Parameter, value: str | None) -> str | None:
    """Option callback: note the URL's password so that :func:`scrub` can mask it."""
    if value:
        run_secrets(ctx).add(value)
    return value


def url_option(command: F) -> F:
    """The ``--url`` option of every command that talks to Redis."""
    return click.option(
        "--url",
        envvar=ENV_VAR,
        show_envvar=True,
        default=None,
        callback=_remember_password,
        help="Redis URL (redis://, rediss://, unix://, redis+cluster://).",
    )(command)


def scrub(ctx: click.Context | None, message: str) -> str:
    """``message`` on one line, passwords masked and control characters made visible."""
    if ctx is not None:
        message = run_secrets(ctx).mask(message)
    return visible(" ".join(message.split()))


def echo_problem(text: str) -> None:
    """Print ``text`` on stderr as an error line is printed: scrubbed, on one line."""
    click.echo(scrub(click.get_current_context(silent=True), text), err=True)


class FrameworkGroup(click.Group):
    """A click group whose commands fail with one clean line (see the module docstring)."""

    def invoke(self, ctx: click.Context) -> Any:
        """Run the command; turn errors into ``Error: ...`` and Ctrl-C into exit 130."""
        try:
            with terminate_as_interrupt():
                return super().invoke(ctx)
        except click.ClickException as exc:
            # Usage errors quote what was typed, and the commands' own errors quote names.
            # click marks `message` Final for readers; rewriting it is the one way to
            # clean the text of every ClickException subclass, however it formats it.
            exc.message = scrub(ctx, exc.message)  # type: ignore[misc]
            raise
        except (click.exceptions.Exit, click.Abort):
            raise
        except Terminated:
            click.echo("Terminated: stopped and cleaned up.", err=True)
            ctx.exit(EXIT_TERMINATED)
        except KeyboardInterrupt:
            click.echo("Interrupted: stopped and cleaned up.", err=True)
            ctx.exit(EXIT_INTERRUPTED)
        except FrameworkError as exc:
            raise click.ClickException(scrub(ctx, f"{type(exc).__name__}: {exc}")) from None
        except OSError as exc:
            raise click.ClickException(scrub(ctx, _os_error(exc))) from None
        except Exception as exc:  # the CLI's isolation boundary: one line, no traceback
            logger.debug("Unexpected error", exc_info=True)
            text = f"Unexpected {type(exc).__name__}: {exc} (-vv logs the traceback)."
            raise click.ClickException(scrub(ctx, text)) from None


def _os_error(exc: OSError) -> str:
    if exc.filename:
        return f"{exc.strerror or exc}: {exc.filename}"
    return f"{type(exc).__name__}: {exc}"


def require_url(url: str | None, command: str) -> str:
    """The URL, or a usage error: files cannot move through a throw-away server."""
    if not url:
        raise click.UsageError(
            f"`framework {command}` needs the shared Redis: pass --url or set {ENV_VAR}."
        )
    return url


def cli_settings(url: str) -> RedisSettings:
    """Parse ``url``.

    ``socket_timeout=inf`` is refused (by :class:`RedisSettings`) rather than read as
    "wait forever": every command relies on a bounded wait to notice a Redis that
    stopped answering.

    Raises:
        ConfigurationError: If the URL is invalid or a timeout is not a finite number of
            seconds up to :data:`~framework.settings.MAX_TIMEOUT`; the message names it.
    """
    return RedisSettings.from_url(url)


@contextmanager
def connect(url: str | None, *, embedded_ok: bool = False) -> Iterator[RedisConnection]:
    """A connection that answered PING; with ``embedded_ok`` and no URL, a throw-away server.

    Raises:
        ConfigurationError: If the URL or a TLS file is invalid.
        AuthenticationFailed: If Redis refuses the credentials or needs some.
        BackendUnavailable: If Redis does not answer.
    """
    with ExitStack() as stack:
        if not url and embedded_ok:
            server = stack.enter_context(EmbeddedRedis())
            console.print(shown(server.notice()))
            url = server.url
        conn = stack.enter_context(RedisConnection(cli_settings(url or "")))
        conn.ping()
        yield conn


class FiniteFloat(click.FloatRange):
    """click's ``FloatRange`` that also refuses NaN (which compares inside every range)."""

    name = "number"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        """Parse ``value``; NaN fails as a usage error (status 2)."""
        number = super().convert(value, param, ctx)
        if math.isnan(number):
            self.fail(f"{value!r} is not a number.", param, ctx)
        return number


#: A command's ``--timeout``: finite, as the URL's timeouts (``inf`` would wait forever).
TIMEOUT = FiniteFloat(min=0.1, max=MAX_TIMEOUT)
#: File bars on screen at once (see :meth:`Bars.add_file`).
SHOWN_BARS = 10


class Bars(Progress):
    """rich's ``Progress`` that prints nothing if it never had a bar, and shows few at once.

    Stopped without a task, ``Progress`` prints its empty display and, on a console
    that is not a terminal, an empty line: stray lines on stdout before an ``Error:``
    line, or in a redirected log.

    rich redraws every visible bar with each new bar and each refresh, so a bar for
    each of a thousand files made ``send`` and ``recv`` spend minutes of CPU drawing
    (time grew with the square of the number of files). At most :data:`SHOWN_BARS`
    file bars are visible: running files first, then the latest finished ones.
    """

    def __init__(self, *columns: str | ProgressColumn, **options: Any) -> None:
        super().__init__(*columns, **options)
        self._places = threading.Lock()
        self._shown = 0  # visible file bars, running or finished
        self._finished: dict[TaskID, None] = {}  # visible and finished, oldest first
        self._waiting: dict[TaskID, None] = {}  # running, hidden until a place is free

    def add_file(self, description: str, total: int, completed: int = 0) -> TaskID:
        """A bar for one file: visible now, or when a running file's bar makes room.

        Args:
            description: The label (plain text).
            total: The file's size.
            completed: Bytes already there (a resumed file).
        """
        with self._places:
            if self._shown >= SHOWN_BARS and self._finished:
                self._drop(next(iter(self._finished)))
            visible = self._shown < SHOWN_BARS
            task = self.add_task(description, total=total, completed=completed, visible=visible)
            if visible:
                self._shown += 1
            else:
                self._waiting[task] = None
            return task

    def finish(self, task: TaskID) -> None:
        """Mark the file of ``task`` finished: its bar stays until a waiting one needs room."""
        with self._places:
            if task in self._waiting:  # never shown: nothing to keep
                del self._waiting[task]
                self.remove_task(task)
                return
            self._finished[task] = None
            if self._waiting:
                self._drop(next(iter(self._finished)))
                shown_next = next(iter(self._waiting))
                del self._waiting[shown_next]
                self.update(shown_next, visible=True)
                self._shown += 1

    def _drop(self, task: TaskID) -> None:
        del self._finished[task]
        self.remove_task(task)
        self._shown -= 1

    def stop(self) -> None:
        """Stop the display; without a task it leaves nothing behind."""
        if self.tasks or self.disable:
            super().stop()
            return
        self.live.transient = True
        self.live.stop()


def transfer_bars() -> Bars:
    """Progress bars of ``send`` and ``recv``; descriptions are plain text, never markup."""
    return Bars(
        TextColumn("{task.description}", markup=False),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=console,
    )
