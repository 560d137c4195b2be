"""A throw-away 3-master + 3-replica Redis Cluster that a test can break.

The session cluster of ``tests/conftest.py`` has no replicas and is shared, so a test
that kills a master or moves a slot needs a cluster of its own. :class:`LocalCluster`
starts one in a fresh temporary directory on free loopback ports, waits until every
node reports ``cluster_state:ok``, and stops every node by pid on :meth:`close`, which
also runs when starting fails halfway.
"""

from __future__ import annotations

import functools
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from subprocess import DEVNULL, STDOUT, Popen
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.crc import key_slot
from redis.retry import Retry

HOST = "127.0.0.1"
#: Client ports are picked here; a node's bus port is its client port + 10000.
PORT_RANGE = (17400, 17500)
BUS_OFFSET = 10000
#: Seconds the cluster gets to start, and each reconfiguration to settle.
START_TIMEOUT = 30.0
SETTLE_TIMEOUT = 20.0
POLL = 0.05


def admin(port: int) -> redis.Redis:
    """A client of one node: short timeouts and no retries, for checks and admin commands."""
    return redis.Redis(
        host=HOST,
        port=port,
        socket_timeout=2.0,
        socket_connect_timeout=1.0,
        retry=Retry(NoBackoff(), 0),
    )


def wait_until(check: Callable[[], bool], what: str, timeout: float = SETTLE_TIMEOUT) -> None:
    """Poll ``check`` until it is true; fail the test naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"Timed out after {timeout} s waiting for {what}.")
        time.sleep(POLL)


def _free(port: int) -> bool:
    with socket.socket() as probe, socket.socket() as bus:
        try:
            probe.bind((HOST, port))
            bus.bind((HOST, port + BUS_OFFSET))
        except OSError:
            return False
    return True


def _call(port: int, *command: object) -> Any:
    with admin(port) as client:
        return client.execute_command(*command)


class LocalCluster:
    """Three masters with one replica each, on loopback; closed by :meth:`close`.

    Args:
        masters: Number of masters.
        replicas: Replicas of each master.
    """

    def __init__(self, masters: int = 3, replicas: int = 1) -> None:
        self.size = masters * (1 + replicas)
        self.replicas = replicas
        self.workdir = Path(tempfile.mkdtemp(prefix="fw-failover-"))
        self.processes: dict[int, Popen[bytes]] = {}  # by client port

    # --- lifecycle -----------------------------------------------------------------------

    def start(self) -> LocalCluster:
        """Start the nodes, join them with ``redis-cli --cluster create``, wait until ok."""
        try:
            candidates = iter(random.sample(range(*PORT_RANGE), len(range(*PORT_RANGE))))
            while len(self.processes) < self.size:
                port = next((p for p in candidates if _free(p)), None)
                if port is None:
                    raise RuntimeError(f"Too few free port pairs in {PORT_RANGE}.")
                self._launch(port)
                answers = functools.partial(self._answers, port)
                wait_until(answers, f"node {port} to start", START_TIMEOUT)
                if self.processes[port].poll() is not None:  # another process took the port
                    self.processes.pop(port)
            self._create()
        except BaseException:
            self.close()
            raise
        return self

    def _launch(self, port: int) -> None:
        args = ["redis-server", "--port", str(port), "--bind", HOST, "--daemonize", "no"]
        args += ["--save", "", "--appendonly", "no", "--dir", str(self.workdir)]
        args += ["--cluster-enabled", "yes", "--cluster-config-file", f"nodes-{port}.conf"]
        args += ["--cluster-node-timeout", "2000", "--logfile", f"redis-{port}.log"]
        self.processes[port] = Popen(args, stdin=DEVNULL, stdout=DEVNULL, stderr=STDOUT)

    def _answers(self, port: int) -> bool:
        """Whether the node answers, or has exited (and never will)."""
        if self.processes[port].poll() is not None:
            return True
        try:
            return bool(_call(port, "PING"))
        except redis.RedisError:
            return False

    def _create(self) -> None:
        command = ["redis-cli", "--cluster", "create", *(f"{HOST}:{p}" for p in self.processes)]
        command += ["--cluster-replicas", str(self.replicas), "--cluster-yes"]
        done = subprocess.run(
            command, stdin=DEVNULL, capture_output=True, timeout=START_TIMEOUT, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"redis-cli --cluster create failed: {done.stdout!r} {done.stderr!r}"
            )
        wait_until(self.settled, "the new cluster to settle", START_TIMEOUT)

    def close(self) -> None:
        """Kill every node by pid (a test may have killed some already); remove the files."""
        for process in self.processes.values():
            if process.poll() is None:
                process.kill()
            process.wait(10)
        self.processes.clear()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- views ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """``redis+cluster://`` URL naming every node (the framework's cluster form)."""
        return "redis+cluster://" + ",".join(f"{HOST}:{p}" for p in self.processes)

    @property
    def alive(self) -> list[int]:
        """Ports of the nodes still running."""
        return [port for port, process in self.processes.items() if process.poll() is None]

    def owner(self, slot: int, *, asked: int | None = None) -> int | None:
        """Port of the master serving ``slot`` in the view of node ``asked`` (any live one)."""
        port = self.alive[0] if asked is None else asked
        for first, last, master, *_ in _call(port, "CLUSTER SLOTS"):
            if first <= slot <= last:
                return int(master[1])
        return None

    def masters(self) -> list[int]:
        """Ports of the live masters."""
        return [
            port for port in self.alive if self.info(port, "replication").get("role") == "master"
        ]

    def replica_of(self, master: int) -> int:
        """Port of a live replica of the master on port ``master``, in sync with it."""
        for port in self.alive:
            info = self.info(port, "replication")
            if info.get("master_port") == master and info.get("master_link_status") == "up":
                return port
        raise LookupError(f"No replica of the master on port {master}.")

    def settled(self) -> bool:
        """Every live node: cluster_state ok, all slots served, replicas' links up."""
        try:
            for port in self.alive:
                info = _call(port, "CLUSTER INFO")
                assert isinstance(info, dict)
                if (
                    info.get("cluster_state") != "ok"
                    or str(info.get("cluster_slots_ok")) != "16384"
                ):
                    return False
                replication = self.info(port, "replication")
                if (
                    replication.get("role") == "slave"
                    and replication.get("master_link_status") != "up"
                ):
                    return False
        except redis.RedisError:
            return False
        return True

    def agreed_owner(self, slot: int) -> int | None:
        """The slot's master if every live node names the same one, else None."""
        try:
            owners = {self.owner(slot, asked=port) for port in self.alive}
        except redis.RedisError:
            return None
        return owners.pop() if len(owners) == 1 else None

    @staticmethod
    def info(port: int, section: str) -> dict[str, object]:
        """``INFO section`` of one node, parsed."""
        with admin(port) as client:
            return dict(client.info(section))

    # --- faults --------------------------------------------------------------------------

    def kill(self, port: int) -> None:
        """SIGKILL the node on ``port``: no goodbye to its clients or to the cluster."""
        os.kill(self.processes[port].pid, signal.SIGKILL)
        self.processes[port].wait(10)

    def restart(self, port: int) -> None:
        """SIGKILL the node on ``port`` and start it again (it keeps no data, only its
        cluster config); wait until the cluster is ok again."""
        self.kill(port)
        self.processes[port].wait(10)
        self._launch(port)
        wait_until(functools.partial(self._answers, port), f"node {port} to start again")
        wait_until(self.settled, f"the cluster to settle after restarting {port}")

    def hang(self, port: int) -> None:
        """SIGSTOP the node on ``port``: its connections stay open, and it answers nothing.

        :meth:`close` kills it like the others.
        """
        os.kill(self.processes[port].pid, signal.SIGSTOP)

    def failover(self, replica: int) -> None:
        """``CLUSTER FAILOVER`` on ``replica`` (a planned, lossless promotion)."""
        _call(replica, "CLUSTER", "FAILOVER")
        wait_until(lambda: self.info(replica, "replication").get("role") == "master", "promotion")

    def move_slot(self, slot: int, source: int, target: int) -> None:
        """Migrate ``slot`` (and any keys in it) from master ``source`` to master ``target``."""
        target_id, source_id = _call(target, "CLUSTER", "MYID"), _call(source, "CLUSTER", "MYID")
        _call(target, "CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
        _call(source, "CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
        while keys := _call(source, "CLUSTER", "GETKEYSINSLOT", slot, 100):
            _call(source, "MIGRATE", HOST, target, "", 0, 5000, "KEYS", *keys)
        # The target first, as redis-cli does: it then owns the slot before the source
        # stops redirecting to it.
        for port in [target, source, *(p for p in self.alive if p not in (source, target))]:
            if self.info(port, "replication").get("role") == "master":
                _call(port, "CLUSTER", "SETSLOT", slot, "NODE", target_id)


def slot_of(channel: str) -> int:
    """The hash slot of a channel (or key) name."""
    return int(key_slot(channel.encode()))
