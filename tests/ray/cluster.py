"""Start and stop a real multi-node Ray cluster on this machine (tests and benchmarks).

Layout: a head node with no CPU (only the driver talks to it) and worker nodes of one CPU each,
so every gristmill actor lands on its own node and a test can kill the node under one of them.
All nodes share this machine's filesystem (the "shared filesystem" the engine needs).

Pitfalls handled here: nodes use 127.0.0.2 (Ray rewrites 127.0.0.1 to the machine's address); Ray
state lives under a short /tmp/rayXXXX (socket paths are limited to 107 bytes); token auth, usage
stats and dashboards are off; health checks are tuned so a killed node is declared dead in about
2 s rather than 14 s. Stopping kills only this cluster's processes (never ``ray stop``, which
kills every Ray on the host), then any process still naming its temp dir, by pid.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

NODE_IP = "127.0.0.2"
STORE_BYTES = 80 * 2**20
HEALTH = {"health_check_initial_delay_ms": 0, "health_check_period_ms": 500,
          "health_check_timeout_ms": 500, "health_check_failure_threshold": 3}
SRC = str(Path(__file__).resolve().parents[2] / "src")
TESTS = str(Path(__file__).resolve().parents[1])  # test models (numpy_models:...) for actors
ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}


def _ours(marker: str) -> list[int]:
    """Pids of processes whose command line names ``marker`` (this cluster's temp dir), and of
    their descendants (Ray workers retitle themselves ``ray::...``, hiding the marker)."""
    named, parent = set(), {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                if marker.encode() in f.read():
                    named.add(int(entry))
            with open(f"/proc/{entry}/stat") as f:
                parent[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
    ours, grew = set(named), True
    while grew:
        more = {pid for pid, ppid in parent.items() if ppid in ours} - ours
        ours |= more
        grew = bool(more)
    return sorted(ours)


def _reap_rings(pids: set[int]) -> None:
    """Unlink gristmill slot rings whose creator was one of ``pids`` and is gone.

    A SIGKILLed actor cannot unlink its ring (its resource tracker dies in the same process
    group); on a real lost node the ring goes with the machine, here every node shares /dev/shm.
    """
    for name in os.listdir("/dev/shm"):
        parts = name.split("-")
        if parts[0] == "gristmill" and len(parts) > 2 and parts[1].isdigit():
            pid = int(parts[1])
            if pid in pids and not os.path.exists(f"/proc/{pid}"):
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join("/dev/shm", name))


def _semaphores() -> set[str]:
    return {n for n in os.listdir("/dev/shm") if n.startswith("sem.mp-")}


def _reap_semaphores(before: set[str]) -> None:
    """Unlink queue semaphores that appeared while the cluster ran and that no process maps.

    They belong to loader queues of actors killed with their node: the actor's resource tracker,
    which would unlink them, died in the same kill (on a real cluster they vanish with the machine).
    """
    mapped: set[str] = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError), open(f"/proc/{entry}/maps") as f:
                mapped.update(line.rsplit("/", 1)[-1].strip() for line in f if "/sem.mp-" in line)
    for name in _semaphores() - before - mapped:
        with contextlib.suppress(OSError):
            os.unlink(os.path.join("/dev/shm", name))


class RayCluster:
    """A running cluster: ``add_worker()``, ``kill(node)``, ``ensure_workers()``, ``workers``."""

    def __init__(self, cluster: Any, size: int, tmp: str) -> None:
        self.cluster, self.size, self.tmp = cluster, size, tmp
        self.workers: list[Any] = []
        self.pids: set[int] = set()  # this cluster's processes seen before a kill

    def add_worker(self) -> Any:
        node = self.cluster.add_node(num_cpus=1, object_store_memory=STORE_BYTES,
                                     node_ip_address=NODE_IP)
        self.workers.append(node)
        return node

    def kill(self, node: Any) -> None:
        """Kill a node's processes without warning, as a lost machine would."""
        self.pids.update(_ours(self.tmp))
        self.workers.remove(node)
        self.cluster.remove_node(node, allow_graceful=False)

    def ensure_workers(self) -> None:
        """Bring the cluster back to ``size`` worker nodes and wait until Ray sees them alive."""
        import ray

        while len(self.workers) < self.size:
            self.add_worker()
        deadline = time.monotonic() + 30
        while sum(1 for n in ray.nodes() if n["Alive"]) < self.size + 1:
            assert time.monotonic() < deadline, "worker nodes did not join"
            time.sleep(0.2)


@contextlib.contextmanager
def local_cluster(workers: int = 2) -> Iterator[RayCluster]:
    """A head node plus ``workers`` one-CPU nodes; this process is connected as the driver."""
    import ray
    from ray.cluster_utils import Cluster

    tmp = tempfile.mkdtemp(prefix="ray", dir="/tmp")
    os.makedirs(os.path.join(tmp, "ray"))
    # Node processes inherit these; PYTHONPATH lets actors import gristmill (and the test models)
    # from this tree.
    env = ENV | {"RAY_TMPDIR": tmp, "PYTHONPATH": os.pathsep.join(
        p for p in (SRC, TESTS, os.environ.get("PYTHONPATH", "")) if p)}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    semaphores = _semaphores()
    cluster = handle = None
    try:
        cluster = Cluster(initialize_head=True, shutdown_at_exit=False, head_node_args={
            "num_cpus": 0, "object_store_memory": STORE_BYTES, "include_dashboard": False,
            "node_ip_address": NODE_IP, "temp_dir": os.path.join(tmp, "ray"),
            "_system_config": HEALTH})
        handle = RayCluster(cluster, workers, tmp)
        ray.init(address=cluster.address, logging_level="WARNING", log_to_driver=False)
        handle.ensure_workers()
        yield handle
    finally:
        with contextlib.suppress(Exception):
            ray.shutdown()
        if cluster is not None:
            with contextlib.suppress(Exception):
                cluster.shutdown()
        stragglers = _ours(tmp)
        for pid in stragglers:  # stragglers of this cluster only, by pid
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if handle is not None:
            time.sleep(0.5)  # let the killed processes go before looking at their rings
            _reap_rings(handle.pids | set(stragglers))
            _reap_semaphores(semaphores)
        shutil.rmtree(tmp, ignore_errors=True)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
