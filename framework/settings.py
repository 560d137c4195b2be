"""Redis connection settings: one validated, immutable model, built from a URL.

Supported URL forms (``[user[:password]@]`` is optional everywhere)::

    redis://[user:password@]host[:port][/db][?option=value...]
    rediss://...                                  TLS; ?ssl_ca_certs=, ssl_certfile=,
                                                  ssl_keyfile=, ssl_cert_reqs=
    unix://[user:password@]/path/to/redis.sock[?db=N]
    redis+cluster://[user:password@]host:port,host:port[,...]  (rediss+cluster:// for TLS)

Query options: ``db``, ``socket_timeout``, ``connect_timeout``, ``retries``,
``max_connections``, ``prefix`` and the ``ssl_*`` options above. Credentials run to
the last ``@``, so a password may contain ``/``, ``?``, ``#`` or ``@`` as they are
(percent-encoding works too); an ``@`` after the host, say in a file path, must be
written ``%40``. The password is held as a :class:`pydantic.SecretStr`: it never appears
in ``repr()``, ``str()``, logs or in :meth:`RedisSettings.url` unless asked for with
``reveal=True``.

This module does no I/O and imports no Redis code.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Literal
from urllib.parse import parse_qs, quote, unquote, urlencode, urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

# Re-exported: the URL helpers were defined here, and callers import them from here.
from framework._url_secrets import MASK as MASK
from framework._url_secrets import MAX_TIMEOUT as MAX_TIMEOUT
from framework._url_secrets import mask_passwords as mask_passwords
from framework._url_secrets import password_candidates as password_candidates
from framework._url_secrets import redact_url as redact_url
from framework._url_secrets import url_error
from framework.exceptions import ConfigurationError
from framework.keys import DEFAULT_PREFIX, KeySchema

__all__ = ["ENV_VAR", "RedisSettings"]

#: Environment variable read by :meth:`RedisSettings.from_env`.
ENV_VAR = "FRAMEWORK_REDIS_URL"
#: Host used when a URL or the settings name none.
DEFAULT_HOST = "127.0.0.1"
#: Redis's standard port.
DEFAULT_PORT = 6379
#: Socket timeout (s) for commands that do not block on the server.
DEFAULT_SOCKET_TIMEOUT = 10.0
#: Timeout (s) for establishing a TCP/TLS/unix connection.
DEFAULT_CONNECT_TIMEOUT = 5.0
#: Retries of idempotent commands after a connection error or timeout.
DEFAULT_RETRIES = 3
#: Connections per pool (and per cluster node); one is held by every blocking reader.
DEFAULT_MAX_CONNECTIONS = 128


_SCHEMES = {
    "redis": (False, False),
    "rediss": (True, False),
    "redis+cluster": (False, True),
    "rediss+cluster": (True, True),
}
_QUERY_FIELDS = (
    "db",
    "socket_timeout",
    "connect_timeout",
    "retries",
    "max_connections",
    "prefix",
    "ssl_ca_certs",
    "ssl_certfile",
    "ssl_keyfile",
    "ssl_cert_reqs",
)
_SSL_FILES = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile")


class RedisSettings(BaseModel):
    """Where and how to reach Redis: standalone, TLS, unix socket or cluster.

    Construct it directly, with :meth:`from_url` or with :meth:`from_env`. Instances are
    immutable and compare by value; the password is a :class:`~pydantic.SecretStr`.

    Raises:
        ConfigurationError: If a field is invalid or fields contradict each other.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    host: str = DEFAULT_HOST
    port: int = Field(DEFAULT_PORT, ge=1, le=65535)
    db: int = Field(0, ge=0)
    username: str | None = None
    password: SecretStr | None = None
    ssl: bool = False
    ssl_ca_certs: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    ssl_cert_reqs: Literal["none", "optional", "required"] = "required"
    unix_socket_path: str | None = None
    cluster: bool = False
    #: Cluster startup nodes; empty means ``[(host, port)]``.
    nodes: list[tuple[str, int]] = Field(default_factory=list)
    socket_timeout: float = Field(DEFAULT_SOCKET_TIMEOUT, gt=0, le=MAX_TIMEOUT, allow_inf_nan=False)
    connect_timeout: float = Field(
        DEFAULT_CONNECT_TIMEOUT, gt=0, le=MAX_TIMEOUT, allow_inf_nan=False
    )
    retries: int = Field(DEFAULT_RETRIES, ge=0)
    max_connections: int = Field(DEFAULT_MAX_CONNECTIONS, ge=1)
    prefix: str = DEFAULT_PREFIX

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            # Callers catch FrameworkError; pydantic's error type is an implementation detail.
            raise ConfigurationError(_describe(exc)) from exc

    @model_validator(mode="after")
    def _consistent(self) -> RedisSettings:
        """Reject combinations that no Redis client can honour."""
        KeySchema(self.prefix)  # raises ConfigurationError for an unusable prefix
        if self.cluster and self.unix_socket_path is not None:
            raise ConfigurationError("Redis Cluster cannot be reached over a unix socket.")
        if self.cluster and self.db != 0:
            raise ConfigurationError(f"Redis Cluster only has database 0, not {self.db}.")
        if self.ssl and self.unix_socket_path is not None:
            raise ConfigurationError("TLS is not supported over a unix socket.")
        if self.nodes and not self.cluster:
            raise ConfigurationError("Startup nodes are only meaningful with cluster=True.")
        for _, port in self.nodes:
            if not 1 <= port <= 65535:
                raise ConfigurationError(f"Cluster node port {port} is not in 1..65535.")
        given = [name for name in _SSL_FILES if getattr(self, name) is not None]
        if given and not self.ssl:
            raise ConfigurationError(f"{', '.join(given)} need TLS: use a rediss:// URL.")
        return self

    @property
    def startup_nodes(self) -> list[tuple[str, int]]:
        """Cluster nodes to bootstrap from: :attr:`nodes`, else ``[(host, port)]``."""
        return list(self.nodes) or [(self.host, self.port)]

    @classmethod
    def from_url(cls, url: str, **overrides: Any) -> RedisSettings:
        """Parse a ``redis://``, ``rediss://``, ``unix://`` or ``redis+cluster://`` URL.

        Args:
            url: The URL; see the module docstring for the accepted forms and options.
            **overrides: Field values that take precedence over the URL.

        Returns:
            The validated settings.

        Raises:
            ConfigurationError: If the URL is malformed, uses an unknown scheme or option,
                an override is not a setting, or the resulting settings are invalid. The
                message never shows the password.
        """
        if not isinstance(url, str) or not url.strip():
            raise ConfigurationError(f"A Redis URL must be a non-empty string, got {url!r}.")
        try:
            fields = _parse_url(url.strip())
        except ValueError as exc:  # includes ConfigurationError
            # The reason may quote a piece of a malformed URL: url_error() hides those.
            raise ConfigurationError(url_error(url, exc)) from exc
        masked = fields.get("password") == SecretStr(MASK)
        if masked and "password" not in overrides:
            # A URL copied from url() or a log: connecting would fail with a confusing AUTH error.
            raise ConfigurationError(
                f"The Redis URL {url!r} carries the masked password {MASK!r}: pass the real one, "
                "e.g. RedisSettings.from_url(url, password=...)."
            )
        unknown = sorted(set(overrides) - set(cls.model_fields))
        if unknown:
            raise ConfigurationError(
                f"Unknown Redis setting(s) {', '.join(map(repr, unknown))}; the settings "
                f"are: {', '.join(sorted(cls.model_fields))}."
            )
        fields.update(overrides)
        try:
            return cls(**fields)
        except ConfigurationError as exc:
            raise ConfigurationError(url_error(url, exc)) from exc

    @staticmethod
    def no_url_hint(environ: Mapping[str, str] = os.environ) -> str:
        """Why no URL was found, for a message: the variable to set, or a near miss."""
        near = sorted(
            name for name in environ if name.startswith("FRAMEWORK_REDIS") and name != ENV_VAR
        )
        if near:
            return f"{', '.join(near)} is not read; did you mean {ENV_VAR}?"
        return f"set {ENV_VAR} or pass --url to use your own"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> RedisSettings | None:
        """Read settings from the ``FRAMEWORK_REDIS_URL`` environment variable.

        Args:
            environ: The environment to read (defaults to :data:`os.environ`).

        Returns:
            The settings, or ``None`` when the variable is unset or blank.

        Raises:
            ConfigurationError: If the variable holds an invalid URL.
        """
        url = environ.get(ENV_VAR, "").strip()
        if not url:
            return None
        try:
            return cls.from_url(url)
        except ConfigurationError as exc:
            raise ConfigurationError(f"Environment variable {ENV_VAR} is invalid: {exc}") from exc

    def url(self, *, reveal: bool = False) -> str:
        """Render the settings as a URL that :meth:`from_url` parses back to equal settings.

        Args:
            reveal: Include the real password instead of ``***``. Only for handing the
                URL to trusted code; never log a revealed URL.

        Returns:
            The URL, with non-default options in its query string.
        """
        auth = self._auth(reveal)
        skip: tuple[str, ...] = ("db",)  # in the path, except for unix sockets
        if self.unix_socket_path is not None:
            location, skip = quote(self.unix_socket_path), ()
        elif self.cluster:
            location = ",".join(_hostport(h, p) for h, p in self.startup_nodes)
        else:
            location = f"{_hostport(self.host, self.port)}/{self.db}"
        scheme = "unix" if self.unix_socket_path is not None else "rediss" if self.ssl else "redis"
        scheme += "+cluster" if self.cluster else ""
        query = urlencode(
            [
                (name, str(getattr(self, name)))
                for name in _QUERY_FIELDS
                if name not in skip and getattr(self, name) != type(self).model_fields[name].default
            ]
        )
        return f"{scheme}://{auth}{location}" + (f"?{query}" if query else "")

    def _auth(self, reveal: bool) -> str:
        user = quote(self.username, safe="") if self.username else ""
        if self.password is None:
            return f"{user}@" if user else ""
        secret = quote(self.password.get_secret_value(), safe="") if reveal else MASK
        return f"{user}:{secret}@"


def _describe(exc: ValidationError) -> str:
    """Turn pydantic's errors into one sentence (inputs are hidden by the model config)."""
    problems = []
    for err in exc.errors(include_url=False, include_input=False):
        where = ".".join(str(p) for p in err["loc"])
        message = str(err["msg"]).removeprefix("Value error, ")
        problems.append(f"{where}: {message}" if where else message)
    return "Invalid Redis settings: " + "; ".join(problems).rstrip(".") + "."


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _split_credentials(url: str) -> tuple[str, dict[str, Any]]:
    """Take ``user:password@`` off a URL before anything else parses it.

    Credentials run from ``scheme://`` to the last ``@``, so a password may hold ``/``, ``?``,
    ``#`` or ``@`` unencoded, and no later parse error can quote a piece of it.
    """
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url, {}
    credentials, rest = rest.rsplit("@", 1)
    return f"{scheme}://{rest}", _parse_credentials(credentials)


def _parse_url(url: str) -> dict[str, Any]:
    """Split a URL into settings fields; raises ValueError with a short reason."""
    url, credentials = _split_credentials(url)
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if parts.fragment:
        raise ValueError("it has a '#' fragment; percent-encode '#' in a password as %23.")
    fields = _parse_query(parts.query)
    fields.update(credentials)
    netloc = parts.netloc
    if scheme == "unix":
        if netloc or not parts.path:
            raise ValueError(
                "a unix URL needs an absolute socket path, e.g. unix:///run/redis.sock."
            )
        fields["unix_socket_path"] = unquote(parts.path)
        return fields
    if scheme not in _SCHEMES:
        raise ValueError(f"the scheme must be one of {', '.join([*_SCHEMES, 'unix'])}.")
    fields["ssl"], fields["cluster"] = _SCHEMES[scheme]
    if _path_db(parts.path) is not None:
        if "db" in fields:
            raise ValueError("it gives the database both in the path and in the query.")
        fields["db"] = _path_db(parts.path)
    if credentials and not netloc:
        # Never a silent 127.0.0.1:6379 with the password sent there: the host was
        # forgotten, or a password holding '@' took it ("redis://:p@ss@").
        raise ValueError(
            "it has credentials but no host after its last '@'; percent-encode '@', '/', "
            "'?' and '#' in a password (%40, %2F, %3F, %23)."
        )
    nodes = [_parse_hostport(item) for item in netloc.split(",")] if netloc else []
    if len(nodes) > 1 and not fields["cluster"]:
        raise ValueError("several hosts need the redis+cluster:// scheme.")
    if nodes:
        fields["host"], fields["port"] = nodes[0]
    if len(nodes) > 1:
        fields["nodes"] = nodes
    return fields


def _parse_credentials(credentials: str) -> dict[str, Any]:
    user, _, password = credentials.partition(":")
    fields: dict[str, Any] = {}
    if user:
        fields["username"] = unquote(user)
    if password:
        fields["password"] = SecretStr(unquote(password))
    return fields


def _parse_hostport(item: str) -> tuple[str, int]:
    parsed = urlsplit(f"//{item}")
    try:
        port = parsed.port
    except ValueError:
        raise ValueError(f"{item!r} does not end in a port number in 1..65535.") from None
    if not parsed.hostname:
        raise ValueError(f"{item!r} names no host.")
    if port is None and item.endswith(":"):
        # "host:" is what an empty $PORT in "host:$PORT" leaves: never a silent 6379.
        raise ValueError(f"{item!r} has a ':' but no port number after it.")
    return parsed.hostname, DEFAULT_PORT if port is None else port


def _path_db(path: str) -> int | None:
    db = path.strip("/")
    if not db:
        return None
    if not db.isdigit():
        raise ValueError(f"the path must be a database number like /0, not {path!r}.")
    return int(db)


def _parse_query(query: str) -> dict[str, Any]:
    try:
        options = parse_qs(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError:
        raise ValueError(f"the query string {query!r} is malformed.") from None
    unknown = sorted(set(options) - set(_QUERY_FIELDS))
    if unknown:
        raise ValueError(
            f"unknown option(s) {', '.join(unknown)}; known: {', '.join(_QUERY_FIELDS)}."
        )
    repeated = sorted(name for name, values in options.items() if len(values) > 1)
    if repeated:
        raise ValueError(f"option(s) {', '.join(repeated)} are given more than once.")
    return {name: values[0] for name, values in options.items()}
