"""The redis-server processes behind :class:`~framework.embedded.EmbeddedRedis`.

:class:`Servers` owns what a throw-away deployment started: redis-server processes on
free loopback ports (each started, checked to answer as itself, and started again on a
fresh port when another process wins the race for one), or fakeredis's TCP server, and
the temporary directory they write to. ``release()`` stops them all; the embedded
server's finalizer holds it, so it never refers back to its owner.
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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from subprocess import DEVNULL, STDOUT, Popen
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from framework.exceptions import BackendUnavailable, ConfigurationError

__all__ = [
    "HOST",
    "LOG_TAIL_LINES",
    "POLL",
    "PORT_ATTEMPTS",
    "STOP_TIMEOUT",
    "Servers",
    "admin_client",
]

# The embedded server's logger: its records keep the name users configure and filter on.
logger = logging.getLogger("framework.embedded")

#: Fresh ports tried when another process grabs the chosen one before the server binds it.
PORT_ATTEMPTS = 5
#: Seconds a server gets to exit after SIGTERM before it is killed.
STOP_TIMEOUT = 5.0
#: Lines of a server's log quoted in a startup error.
LOG_TAIL_LINES = 20

HOST = "127.0.0.1"
# A cluster node also listens on port + 10000 (its bus port); client ports from this
# range keep both below 65536 and mostly outside the kernel's ephemeral range.
_CLUSTER_PORT_RANGE = (20000, 30000)
_BUS_OFFSET = 10000
POLL = 0.02
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
                probe.bind((HOST, port))
                if cluster:
                    bus.bind((HOST, port + _BUS_OFFSET))
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


def admin_client(port: int) -> redis.Redis:
    """A short-timeout client without retries, for readiness polling."""
    return redis.Redis(host=HOST, port=port, socket_timeout=2.0, retry=Retry(NoBackoff(), 0))


def _launch(executable: str, port: int, workdir: Path, *, cluster: bool) -> Popen[bytes]:
    """Start redis-server in the foreground, logging stdout and stderr to ``workdir``."""
    args = [executable, "--port", str(port), "--bind", HOST, "--daemonize", "no"]
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
    with admin_client(port) as client:
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
            time.sleep(POLL)
    if _PORT_TAKEN in _log_tail(log):
        return False
    raise BackendUnavailable(
        f"redis-server on port {port} exited with code {process.returncode} while "
        f"starting. Its log ends with:\n{_log_tail(log)}"
    )


@dataclass
class Servers:
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
        self.fake = make_server((HOST, 0))
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
