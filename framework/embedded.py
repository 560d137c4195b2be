"""Throw-away Redis servers for demos, tests and benchmarks.

:class:`EmbeddedRedis` runs ``redis-server`` from ``PATH`` on a free loopback port
without persistence, or (``cluster=True``) a local three-master Redis Cluster in a
fresh temporary directory. Without ``redis-server`` a standalone server falls back
to fakeredis's TCP server, which other processes can reach too.

Servers never outlive their owner: ``close()`` is idempotent, a failed start stops
what did start, a :func:`weakref.finalize` hook stops forgotten servers at exit,
and on Linux servers get SIGTERM when their starter is SIGKILLed.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from subprocess import DEVNULL, STDOUT, Popen
from typing import TYPE_CHECKING, Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from framework.exceptions import BackendUnavailable, ClosedError, ConfigurationError
from framework.settings import RedisSettings

if TYPE_CHECKING:
    from framework.connection import RedisConnection

__all__ = ["DEFAULT_STARTUP_TIMEOUT", "EmbeddedRedis"]

logger = logging.getLogger(__name__)

#: Seconds a server (or a whole cluster) gets to start answering before we give up.
DEFAULT_STARTUP_TIMEOUT = 30.0
#: Fresh ports tried when another process grabs the chosen one before the server binds it.
PORT_ATTEMPTS = 5
#: Seconds a server gets to exit after SIGTERM before it is killed.
STOP_TIMEOUT = 5.0
#: Lines of a server's log quoted in a startup error.
LOG_TAIL_LINES = 20

_HOST = "127.0.0.1"
_CLUSTER_MASTERS = 3
# A cluster node also listens on port + 10000 (its bus port); client ports from this
# range keep both below 65536 and mostly outside the kernel's ephemeral range.
_CLUSTER_PORT_RANGE = (20000, 30000)
_BUS_OFFSET = 10000
_POLL = 0.02
_PORT_TAKEN = "Address already in use"


def _stop_process(process: Popen[bytes]) -> None:
    """SIGTERM, wait, then SIGKILL; always reaps the process."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        logger.warning("redis-server pid %d ignored SIGTERM; killing it.", process.pid)
        process.kill()
        process.wait()


def _log_tail(path: Path) -> str:
    """Last lines of a server log, for error messages."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log was written)"
    return "\n".join(lines[-LOG_TAIL_LINES:]) or "(the log is empty)"


def _pick_port(*, cluster: bool) -> int:
    """A port free right now (for a cluster node, its bus port too); callers retry races."""
    for _ in range(200):
        port = random.randrange(*_CLUSTER_PORT_RANGE) if cluster else 0
        with socket.socket() as probe, socket.socket() as bus:
            try:
                probe.bind((_HOST, port))
                if cluster:
                    bus.bind((_HOST, port + _BUS_OFFSET))
            except OSError:
                continue
            chosen: int = probe.getsockname()[1]
            return chosen
    raise BackendUnavailable("Found no free loopback port for redis-server.")


def _parent_death_hook() -> Callable[[], None] | None:
    """On Linux, a pre-exec hook so the child gets SIGTERM when its starting thread dies.

    This covers a session killed with SIGKILL, where no exit hook runs. Main thread
    only: the kernel fires when the *thread* that forked exits, which for a worker
    thread may be long before the owner closes the server.
    """
    if sys.platform != "linux" or threading.current_thread() is not threading.main_thread():
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved here, not in the child
    except (OSError, AttributeError):
        return None
    sigterm = int(signal.SIGTERM)
    return lambda: prctl(1, sigterm)  # 1 = PR_SET_PDEATHSIG


def _admin_client(port: int) -> redis.Redis:
    """A short-timeout client without retries, for readiness polling."""
    return redis.Redis(host=_HOST, port=port, socket_timeout=2.0, retry=Retry(NoBackoff(), 0))


def _launch(executable: str, port: int, workdir: Path, *, cluster: bool) -> Popen[bytes]:
    """Start redis-server in the foreground, logging stdout and stderr to ``workdir``."""
    args = [executable, "--port", str(port), "--bind", _HOST, "--daemonize", "no"]
    args += ["--save", "", "--appendonly", "no", "--dir", str(workdir)]
    if cluster:
        args += ["--cluster-enabled", "yes", "--cluster-config-file", f"nodes-{port}.conf"]
        args += ["--cluster-node-timeout", "2000"]
    hook = _parent_death_hook()
    # stderr goes to the log too: config errors are printed before logging starts.
    with (workdir / f"redis-{port}.log").open("wb") as log:
        process = Popen(args, stdin=DEVNULL, stdout=log, stderr=STDOUT, preexec_fn=hook)
    logger.debug("Started redis-server pid %d on port %d.", process.pid, port)
    return process


def _wait_ready(process: Popen[bytes], port: int, workdir: Path, deadline: float) -> bool:
    """Wait until the server answers as itself; False when another process owns its port."""
    log = workdir / f"redis-{port}.log"
    with _admin_client(port) as client:
        while process.poll() is None:
            try:
                # Another process may own the port and answer; compare pids to be sure.
                return int(client.info("server")["process_id"]) == process.pid
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
                pass
            if time.monotonic() > deadline:
                raise BackendUnavailable(
                    f"redis-server on port {port} did not answer within the startup "
                    f"timeout. Its log ends with:\n{_log_tail(log)}"
                )
            time.sleep(_POLL)
    if _PORT_TAKEN in _log_tail(log):
        return False
    raise BackendUnavailable(
        f"redis-server on port {port} exited with code {process.returncode} while "
        f"starting. Its log ends with:\n{_log_tail(log)}"
    )


@dataclass
class _Servers:
    """Everything to release; held by the finalizer, so it must not reference the owner."""

    workdir: Path | None = None
    processes: dict[int, Popen[bytes]] = field(default_factory=dict)  # by client port
    fake: Any = None  # fakeredis.TcpFakeServer
    fake_thread: threading.Thread | None = None

    def start_node(self, executable: str, deadline: float, cluster: bool) -> int:
        """Start one server on a fresh port, retrying when another process wins the port race."""
        if self.workdir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix="fw-redis-"))
        for _ in range(PORT_ATTEMPTS):
            port = _pick_port(cluster=cluster)
            # Registered at once, so a failure below still stops it.
            self.processes[port] = _launch(executable, port, self.workdir, cluster=cluster)
            if _wait_ready(self.processes[port], port, self.workdir, deadline):
                return port
            logger.debug("Port %d was taken by another process; retrying on a new one.", port)
            _stop_process(self.processes.pop(port))
        raise BackendUnavailable(f"Other processes took {PORT_ATTEMPTS} free ports before us.")

    def start_fake(self) -> int:
        """Serve a fresh fakeredis server over TCP on a free port; returns the port."""
        try:
            from framework._faketcp import make_server  # imports fakeredis, a dev dependency
        except ImportError as exc:
            raise ConfigurationError("Neither redis-server nor fakeredis is installed.") from exc
        # Port 0: the kernel picks and the socket is bound right here, so there is no race.
        self.fake = make_server((_HOST, 0))
        # Daemon handler threads cannot hold up interpreter exit; they stop on shutdown anyway.
        self.fake.daemon_threads = True
        serve = functools.partial(self.fake.serve_forever, poll_interval=0.05)
        self.fake_thread = threading.Thread(target=serve, name="fw-embedded-fake", daemon=True)
        self.fake_thread.start()
        port: int = self.fake.server_address[1]
        return port

    def release(self) -> None:
        """Stop every server, then remove the working directory."""
        for process in self.processes.values():
            _stop_process(process)
        self.processes.clear()
        if self.fake is not None and self.fake_thread is not None:
            self.fake.shutdown()  # returns once serve_forever has left its loop
            self.fake.server_close()
            self.fake_thread.join(STOP_TIMEOUT)
            self.fake = self.fake_thread = None
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None


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
        with _admin_client(port) as client:
            info = client.execute_command("CLUSTER INFO")  # redis-py parses it into a dict
    except redis.exceptions.RedisError:
        return False
    known = str(info.get("cluster_known_nodes"))
    return bool(info.get("cluster_state") == "ok" and known == str(_CLUSTER_MASTERS))


def _create_cluster(cli: str, ports: tuple[int, ...], deadline: float) -> None:
    """Join the nodes with ``redis-cli --cluster create``; wait for cluster_state:ok on each."""
    command = [cli, "--cluster", "create", *(f"{_HOST}:{port}" for port in ports)]
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
        time.sleep(_POLL)


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
        self._servers = _Servers()
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
        hosts = ",".join(f"{_HOST}:{port}" for port in self._ports)
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
