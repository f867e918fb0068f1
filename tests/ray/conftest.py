"""A real multi-node Ray cluster on this machine, started once per session, for ``ray`` tests.

Layout: a head node with no CPU (only the driver, this pytest process, talks to it) and
``WORKER_NODES`` nodes of one CPU each, so every gristmill actor lands on its own node and a test
can kill the node under one of them. All nodes share this machine's filesystem (the "shared
filesystem" the engine needs).

Pitfalls handled here: nodes use 127.0.0.2 (Ray rewrites 127.0.0.1 to the machine's address); Ray
state lives under a short /tmp/rayXXXX (socket paths are limited to 107 bytes); token auth, usage
stats and dashboards are off; health checks are tuned so a killed node is declared dead in about
2 s rather than 14 s. Teardown stops only this cluster's processes (never ``ray stop``, which
kills every Ray on the host) and then kills any process still naming its temp dir.
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

import pytest

WORKER_NODES = 2
NODE_IP = "127.0.0.2"
STORE_BYTES = 80 * 2**20
HEALTH = {"health_check_initial_delay_ms": 0, "health_check_period_ms": 500,
          "health_check_timeout_ms": 500, "health_check_failure_threshold": 3}
SRC = str(Path(__file__).resolve().parents[2] / "src")


def _ours(marker: str) -> list[int]:
    """Pids of processes whose command line names ``marker`` (this cluster's temp dir)."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            with contextlib.suppress(OSError):
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    if marker.encode() in f.read():
                        pids.append(int(entry))
    return pids


class RayCluster:
    """The session's cluster: ``add_worker()``, ``kill(node)``, ``workers`` (alive nodes)."""

    def __init__(self, cluster: Any) -> None:
        self.cluster = cluster
        self.workers: list[Any] = []

    def add_worker(self) -> Any:
        node = self.cluster.add_node(num_cpus=1, object_store_memory=STORE_BYTES,
                                     node_ip_address=NODE_IP)
        self.workers.append(node)
        return node

    def kill(self, node: Any) -> None:
        """Kill a node's processes without warning, as a lost machine would."""
        self.workers.remove(node)
        self.cluster.remove_node(node, allow_graceful=False)

    def ensure_workers(self) -> None:
        """Bring the cluster back to ``WORKER_NODES`` worker nodes and wait until Ray sees them."""
        import ray

        while len(self.workers) < WORKER_NODES:
            self.add_worker()
        deadline = time.monotonic() + 30
        while sum(1 for n in ray.nodes() if n["Alive"]) < WORKER_NODES + 1:
            assert time.monotonic() < deadline, "worker nodes did not join"
            time.sleep(0.2)


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[RayCluster]:
    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    tmp = tempfile.mkdtemp(prefix="ray", dir="/tmp")
    os.makedirs(os.path.join(tmp, "ray"))
    with pytest.MonkeyPatch.context() as mp:
        # Node processes inherit these; PYTHONPATH lets actors import gristmill from this tree.
        mp.setenv("RAY_TMPDIR", tmp)
        mp.setenv("RAY_USAGE_STATS_ENABLED", "0")
        mp.setenv("RAY_AUTH_MODE", "disabled")
        mp.setenv("PYTHONPATH", os.pathsep.join(
            p for p in (SRC, os.environ.get("PYTHONPATH", "")) if p))
        cluster = Cluster(initialize_head=True, shutdown_at_exit=False, head_node_args={
            "num_cpus": 0, "object_store_memory": STORE_BYTES, "include_dashboard": False,
            "node_ip_address": NODE_IP, "temp_dir": os.path.join(tmp, "ray"),
            "_system_config": HEALTH})
        handle = RayCluster(cluster)
        try:
            for _ in range(WORKER_NODES):
                handle.add_worker()
            ray.init(address=cluster.address, logging_level="WARNING", log_to_driver=False)
            handle.ensure_workers()
            yield handle
        finally:
            with contextlib.suppress(Exception):
                ray.shutdown()
            with contextlib.suppress(Exception):
                cluster.shutdown()
            for pid in _ours(tmp):  # stragglers of this cluster only, by pid
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="session")
def tree210(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """210 real photos (15 folders) in nested folders."""
    from photos import make_tree

    root = tmp_path_factory.mktemp("photos210")
    return root, make_tree(root, folders=15)
