"""What every command shares: the ``--url`` option, one-line errors, exit codes, consoles.

Errors: a framework error, an OS error (a missing file, say) or anything unexpected ends
the command with exit status 1 and a single ``Error: ...`` line on stderr, never a
traceback (``-vv`` logs the traceback of an unexpected error). Ctrl-C exits with 130
once the command's context managers have cleaned up what it created. Every message
passes through :func:`scrub`, which masks any password given on the command line or in
``FRAMEWORK_REDIS_URL``, encoded or not.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any, TypeVar
from urllib.parse import quote, unquote

import click
from rich.console import Console

from framework.connection import RedisConnection
from framework.embedded import EmbeddedRedis
from framework.exceptions import FrameworkError
from framework.settings import ENV_VAR, MASK

__all__ = ["FrameworkGroup", "connect", "console", "require_url", "scrub", "url_option"]

logger = logging.getLogger("framework.cli")

#: Exit status after Ctrl-C (128 + SIGINT), as shells report it.
EXIT_INTERRUPTED = 130

#: Tables and progress go to stdout; ``Error:`` lines go to stderr (through click).
console = Console(highlight=False)

F = TypeVar("F", bound=Callable[..., Any])

_SECRETS_KEY = "framework.secrets"
# The password runs from the first ":" after the user name to the last "@".
_PASSWORD = re.compile(r"^[^:/]+://[^:@/]*:(.*)@", re.DOTALL)


def _remember_password(ctx: click.Context, _: click.Parameter, value: str | None) -> str | None:
    """Option callback: note the URL's password so that :func:`scrub` can mask it."""
    match = _PASSWORD.match(value or "")
    if match and match.group(1):
        raw = match.group(1)
        ctx.find_root().meta.setdefault(_SECRETS_KEY, set()).update(
            {raw, unquote(raw), quote(unquote(raw), safe="")}
        )
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
    """``message`` on one line, with every known password replaced by ``***``."""
    secrets = ctx.find_root().meta.get(_SECRETS_KEY, set()) if ctx else set()
    for secret in sorted(secrets, key=len, reverse=True):
        message = message.replace(secret, MASK)
    return " ".join(message.split())


class FrameworkGroup(click.Group):
    """A click group whose commands fail with one clean line (see the module docstring)."""

    def invoke(self, ctx: click.Context) -> Any:
        """Run the command; turn errors into ``Error: ...`` and Ctrl-C into exit 130."""
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
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
            console.print(server.notice())
            url = server.url
        conn = stack.enter_context(RedisConnection.from_url(url or ""))
        conn.ping()
        yield conn
