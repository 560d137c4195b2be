"""Finding and masking passwords in Redis URLs, well-formed or mistyped (for messages).

Pure string work, kept apart from :mod:`framework.settings` (which re-exports it): a
message about a URL must never show its password, also when the URL is too broken to
parse and the parser's complaint quotes a piece of it.
"""

from __future__ import annotations

import re
from urllib.parse import quote, unquote

__all__ = [
    "MASK",
    "MAX_TIMEOUT",
    "carries_password",
    "mask_passwords",
    "password_candidates",
    "redact_url",
    "url_error",
]

#: Replaces the password wherever settings are shown.
MASK = "***"

# Everything between "scheme://" and the last "@" may hold a password.
_CREDENTIALS = re.compile(r"^([^:/]+://[^:@/]*:).*@", re.DOTALL)
# A well-formed URL: its credentials are "user:password" up to the last "@".
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
# What a mistyped scheme leaves in front of the credentials: "redis:/", "redis:", "redis//".
_SLOPPY_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*(?::/*|/+)")
#: The schemes of the URLs this package reads.
_REDIS_SCHEMES = frozenset({"redis", "rediss", "unix", "redis+cluster", "rediss+cluster"})
# Query options whose value is a secret (``?password=...`` is a common redis-py form).
_SECRET_OPTION = re.compile(r"([?&](?:password|passwd|pass|pwd|auth|secret|token)=)([^&#]*)", re.I)
# A quoted piece of an error message (the parser quotes what it refuses).
_QUOTED = re.compile(r"'([^']*)'")
#: Largest socket or connect timeout (s): larger ones overflow the platform's time type
#: deep inside the socket layer, and no Redis call needs to wait a day.
MAX_TIMEOUT = 86400.0


def carries_password(text: str) -> bool:
    """Whether ``text`` is a URL that carries a password.

    As ``scheme://user:pw@host`` (the password runs to the last ``@``, so unencoded
    ``/``, ``?`` and ``#`` count) or as a secret query option (``?password=``).
    """
    return bool(_SCHEME.match(text) and (_CREDENTIALS.match(text) or _SECRET_OPTION.search(text)))


def password_candidates(url: str) -> set[str]:
    """Everything in ``url`` that may be a password, in every form a message may show it.

    A well-formed URL (``scheme://user:password@host``) yields its password. A URL with
    a mistyped scheme (``redis:/:pw@host``, ``redis//u:pw@host``, ``pw@host``) yields
    everything before its last ``@`` as well: which part was meant as the password
    cannot be known, and masking a user name too costs nothing. A URL without ``@``
    whose "port" is not a number (``redis://user:pw``, the host forgotten) yields that
    "port".

    Args:
        url: The URL as given, valid or not.

    Returns:
        The raw, percent-decoded, percent-encoded and ``repr()``-escaped forms.
    """
    head, at, _ = url.rpartition("@")
    found: set[str] = set()
    if at:
        well_formed = _SCHEME.match(head)
        userinfo = head[well_formed.end() :] if well_formed else _SLOPPY_SCHEME.sub("", head, 1)
        found.add(userinfo.partition(":")[2])
        if not well_formed:
            found.add(userinfo)
    else:
        authority = re.split(r"[/?#]", _SCHEME.sub("", url), maxsplit=1)[0]
        for node in authority.split(","):  # "host:port,host:port" lists (clusters)
            port = node.partition(":")[2]
            if not node.startswith("[") and port and not port.isdigit():
                found.add(port)
    found.update(value for _, value in _SECRET_OPTION.findall(url))
    forms: set[str] = set()
    for raw in filter(None, found):
        for text in {raw, unquote(raw)}:
            forms |= {text, quote(text, safe=""), quote(text), repr(text)[1:-1]}
    return forms


def mask_passwords(text: str, url: str, *, shortest: int = 1) -> str:
    """``text`` with every :func:`password_candidates` form of ``url`` replaced by ``***``.

    Args:
        text: The message.
        url: The URL whose passwords to mask.
        shortest: Forms shorter than this are left alone (they would mask words).
    """
    # Longest first: a password that contains another must be masked whole.
    for secret in sorted(password_candidates(url), key=len, reverse=True):
        if len(secret) >= shortest:
            text = text.replace(secret, MASK)
    return text


def redact_url(url: str) -> str:
    """Return ``url`` with any password replaced by ``***`` (best effort, for messages).

    Args:
        url: A URL that may carry credentials, valid or not.

    Returns:
        The URL with everything between ``user:`` and the last ``@`` masked; a URL too
        malformed for that (``redis:/:pw@host``) with everything that may be a password
        masked.
    """
    if "@" in url and not _SCHEME.match(url):
        # No "://": which part is the user name cannot be told, so all of it goes.
        scheme = _sloppy_scheme(url)
        prefix = scheme.group(0) if scheme else ""
        url = f"{prefix}{MASK}@{url.rsplit('@', 1)[1]}"
    masked = _CREDENTIALS.sub(lambda m: f"{m.group(1)}{MASK}@", url)
    masked = _SECRET_OPTION.sub(lambda m: f"{m.group(1)}{MASK}", masked)
    return masked if _SCHEME.match(url) and "@" in url else mask_passwords(masked, url)


def _sloppy_scheme(url: str) -> re.Match[str] | None:
    """A mistyped scheme of a Redis URL (``redis:/``), never the start of a password.

    Without ``://``, ``pass:`` of ``pass:word@host`` and ``top/`` of ``top/secret@host``
    look like schemes too: only the schemes this package reads count.
    """
    found = _SLOPPY_SCHEME.match(url)
    if found is None:
        return None
    name = found.group(0).rstrip(":/").lower()
    return found if name in _REDIS_SCHEMES else None


def url_error(url: str, reason: object) -> str:
    """The message for a URL that could not be parsed, without any piece of a password.

    A URL with credentials that fails to parse may have been split at the wrong ``@``
    (a password holding ``@``, the host forgotten: ``redis://:p@ss/w#1``), so everything
    after its scheme is hidden, and so is every quoted piece of ``reason`` taken from it.
    Other URLs are shown as :func:`redact_url` shows them.

    Args:
        url: The URL as given.
        reason: Why it was refused.
    """
    text = str(reason)
    if "@" not in url:
        return mask_passwords(f"Invalid Redis URL {redact_url(url)!r}: {text}", url)
    scheme = _SCHEME.match(url) or _sloppy_scheme(url)
    prefix = scheme.group(0) if scheme else ""
    rest = url[len(prefix) :]

    def hide(quoted: re.Match[str]) -> str:
        piece = quoted.group(1)
        secret = piece in rest and any(char.isalnum() for char in piece)
        return f"'{MASK}'" if secret else quoted.group(0)

    # Unquoted, only forms long enough not to mask ordinary words ("p" in "percent").
    text = mask_passwords(_QUOTED.sub(hide, text), url, shortest=3)
    shown = prefix + MASK
    return f"Invalid Redis URL {shown!r} (hidden after the scheme: it holds credentials): {text}"
