"""Throw-away Redis servers for demos, tests and benchmarks.

:class:`EmbeddedRedis` runs ``redis-server`` from ``PATH`` on a free loopback port
without persistence, or (``cluster=True``) a local three-master Redis Cluster in a
fresh temporary directory. Without ``redis-server`` a standalone server falls back
to fakeredis's TCP server, which other processes can reach too.

Servers never outlive their owner: ``close()`` is idempotent, a failed start stops
what did start, a :func:`weakref.finalize` hook stops forgotten servers at exit,
and on Linux servers get SIGTERM when their starter is SIGKILLed. The processes
themselves (ports, launch, readiness, release) are handled in
:mod:`framework._redis_servers`.
"""

from __future__ import annotations

import functools
import logging
import shutil
import subprocess
import time
import weakref
from pathlib import Path
from subprocess import DEVNULL
from typing import TYPE_CHECKING

import redis

from framework._redis_servers import HOST, LOG_TAIL_LINES, POLL, Servers, admin_client
from framework._redis_servers import PORT_ATTEMPTS as PORT_ATTEMPTS
from framework._redis_servers import STOP_TIMEOUT as STOP_TIMEOUT
from framework.exceptions import BackendUnavailable, ClosedError, ConfigurationError
from framework.settings import RedisSettings

if TYPE_CHECKING:
    from framework.connection import RedisConnection

__all__ = ["DEFAULT_STARTUP_TIMEOUT", "EmbeddedRedis"]

logger = logging.getLogger(__name__)

#: Seconds a server (or a whole cluster) gets to start answering before we give up.
DEFAULT_STARTUP_TIMEOUT = 30.0
_CLUSTER_MASTERS = 3


def _find_cli(server: str) -> str:
    """redis-cli next to ``server``, else on PATH."""
    cli = shutil.which(str(Path(server).with_name("redis-cli"))) or shutil.which("redis-cli")
    if cli is None:
        raise ConfigurationError(
            "A local Redis Cluster needs redis-cli to run --cluster create, but it is neither "
            f"next to {server!r} nor on PATH; install it (`apt-get install redis-tools`)."
        )
    return cli


def _cluster_ready(port: int) -> bool:
    """Whether a node reports cluster_state:ok and knows every master."""
    try:
        with admin_client(port) as client:
            info = client.execute_command("CLUSTER INFO")  # redis-py parses it into a dict
    except redis.exceptions.RedisError:
        return False
    known = str(info.get("cluster_known_nodes"))
    return bool(info.get("cluster_state") == "ok" and known == str(_CLUSTER_MASTERS))


def _create_cluster(cli: str, ports: tuple[int, ...], deadline: float) -> None:
    """Join the nodes with ``redis-cli --cluster create``; wait for cluster_state:ok on each."""
    command = [cli, "--cluster", "create", *(f"{HOST}:{port}" for port in ports)]
    command += ["--cluster-replicas", "0", "--cluster-yes"]
    left = max(1.0, deadline - time.monotonic())
    try:
        done = subprocess.run(command, stdin=DEVNULL, capture_output=True, timeout=left)
    except subprocess.TimeoutExpired as exc:
        raise BackendUnavailable("redis-cli --cluster create did not finish in time.") from exc
    if done.returncode != 0:
        output = (done.stdout + done.stderr).decode(errors="replace").splitlines()
        raise BackendUnavailable(
            f"redis-cli --cluster create failed with exit code {done.returncode}. "
            "Its output ends with:\n" + "\n".join(output[-LOG_TAIL_LINES:])
        )
    while pending := [port for port in ports if not _cluster_ready(port)]:
        if time.monotonic() > deadline:
            raise BackendUnavailable(
                "The local cluster did not reach cluster_state:ok within the startup timeout "
                f"(nodes on ports {pending} are not ready)."
            )
        time.sleep(POLL)


class EmbeddedRedis:
    """A throw-away Redis server (or local cluster) owned by this object.

    Args:
        cluster: Start a local three-master Redis Cluster instead of one server.
        fake_fallback: Without ``redis-server``, serve fakeredis over TCP (with a
            warning) instead of failing. Standalone only.
        fake: Serve fakeredis over TCP even when ``redis-server`` exists.
        executable: ``redis-server`` name or path (default: found on PATH).
            ``redis-cli`` is looked up next to it first, then on PATH.
        startup_timeout: Seconds the server or cluster gets to start answering.

    Raises:
        ConfigurationError: If ``cluster`` and ``fake`` are combined.
    """

    def __init__(
        self,
        *,
        cluster: bool = False,
        fake_fallback: bool = True,
        fake: bool = False,
        executable: str | None = None,
        startup_timeout: float = DEFAULT_STARTUP_TIMEOUT,
    ) -> None:
        if cluster and fake:
            raise ConfigurationError("fakeredis has no cluster mode: ask for fake or cluster.")
        self._cluster = cluster
        self._fake_fallback = fake_fallback
        self._force_fake = fake
        self._executable = executable or "redis-server"
        self._startup_timeout = startup_timeout
        self._servers = Servers()
        # Runs on close(), on garbage collection or at interpreter exit, whichever comes first.
        self._finalizer = weakref.finalize(self, self._servers.release)
        self._state = "new"
        self._url: str | None = None
        self._ports: tuple[int, ...] = ()
        #: True when fakeredis's TCP server stands in for redis-server.
        self.is_fake = False

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT``, or ``redis+cluster://127.0.0.1:P1,...`` for a cluster.

        Raises:
            ClosedError: If the server is not running (not started yet, or closed).
        """
        if self._state != "running" or self._url is None:
            raise ClosedError(f"EmbeddedRedis is {self._state}; it has a URL only while running.")
        return self._url

    def notice(self) -> str:
        """The line a tool prints when it started this server because none was configured."""
        kind = "fakeredis TCP server" if self.is_fake else "redis-server"
        return (
            f"No Redis configured ({RedisSettings.no_url_hint()}): started an embedded "
            f"{kind} at {self.url}"
        )

    @property
    def ports(self) -> tuple[int, ...]:
        """Client ports of the running server(s); empty when not running."""
        return self._ports

    @property
    def pids(self) -> tuple[int, ...]:
        """Process ids of the running redis-server processes (none for fakeredis)."""
        return tuple(process.pid for process in self._servers.processes.values())

    def start(self) -> EmbeddedRedis:
        """Start the server(s), wait until they answer, and return ``self`` (no-op if running).

        Raises:
            ClosedError: If it was closed; a closed EmbeddedRedis is not restarted.
            ConfigurationError: If no usable server program is installed.
            BackendUnavailable: If a server did not start in time (the message quotes its log).
        """
        if self._state == "closed":
            raise ClosedError("EmbeddedRedis was closed and cannot be restarted; create a new one.")
        if self._state == "new":
            try:
                self._start()
            except BaseException:
                self.close()  # stop whatever did start before the failure
                raise
            self._state = "running"
            logger.info("Embedded Redis ready at %s.", self._url)
        return self

    def _start(self) -> None:
        executable = None if self._force_fake else shutil.which(self._executable)
        if executable is None:
            self._check_fake_allowed()
            self._ports = (self._servers.start_fake(),)
            self.is_fake = True
        else:
            cli = _find_cli(executable) if self._cluster else ""  # fail before starting anything
            deadline = time.monotonic() + self._startup_timeout
            count = _CLUSTER_MASTERS if self._cluster else 1
            start = functools.partial(self._servers.start_node, executable, deadline)
            self._ports = tuple(start(self._cluster) for _ in range(count))
            if self._cluster:
                _create_cluster(cli, self._ports, deadline)
        hosts = ",".join(f"{HOST}:{port}" for port in self._ports)
        self._url = f"redis+cluster://{hosts}" if self._cluster else f"redis://{hosts}"

    def _check_fake_allowed(self) -> None:
        missing = f"{self._executable!r} was not found"
        if self._cluster:
            raise ConfigurationError(
                f"A local Redis Cluster needs redis-server, but {missing}; install it "
                "(`apt-get install redis-server redis-tools`). fakeredis has no cluster mode."
            )
        if not self._force_fake and not self._fake_fallback:
            raise ConfigurationError(f"{missing} and fake_fallback is off; install redis-server.")
        if not self._force_fake:
            logger.warning("%s; using fakeredis's TCP server (no size limits).", missing)

    def connection(self) -> RedisConnection:
        """A new :class:`~framework.connection.RedisConnection` here; the caller closes it.

        Raises:
            ClosedError: If the server is not running.
        """
        from framework.connection import RedisConnection  # lazy: servers do not need it

        return RedisConnection.from_url(self.url)

    def close(self) -> None:
        """Stop the server(s) and remove their files. Safe to call more than once."""
        self._finalizer()  # releases at most once
        self._state = "closed"
        self._ports = ()

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        kind = "cluster" if self._cluster else "fake" if self.is_fake else "server"
        return f"<EmbeddedRedis {kind} {self._state} url={self._url!r}>"
