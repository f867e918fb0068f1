"""The Ray engine on a real 3-node Ray cluster: same output as the local engine, resume, node loss.

Every test here shares one session cluster (see conftest.py) and one local-engine reference run
over 210 real photos; the tests run in file order and each leaves the cluster with its two worker
nodes.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import gristmill
from gristmill import job, ledger
from gristmill.errors import JobFailed

pytestmark = [pytest.mark.ray, pytest.mark.slow]

# Small batches and shards so a 210-photo job has 14 shards to spread, retry and resume.
OPTIONS = {"batch_size": 8, "shard_size": 16, "device": "cpu", "threads": 1, "loaders": 1,
           "progress": False}


def run(tree: Path, out: Path, **options: Any) -> gristmill.Report:
    return gristmill.run([str(tree)], str(out), **(OPTIONS | options))


def read(out: Path) -> tuple[list[str], dict[str, np.ndarray], list[tuple[str, ...]]]:
    with gristmill.open(str(out)) as result:
        return result.names, {k: v[:] for k, v in result.outputs.items()}, result.errors


def assert_same(out: Path, reference: Path) -> None:
    """Same names in the same order, each input once, same values (<= 1e-6), same errors."""
    names, outputs, errors = read(out)
    ref_names, ref_outputs, ref_errors = read(reference)
    assert names == ref_names
    assert len(set(names)) == len(names)
    assert errors == ref_errors
    assert outputs.keys() == ref_outputs.keys() and outputs
    for key, value in outputs.items():
        np.testing.assert_allclose(value, ref_outputs[key], rtol=0, atol=1e-6, err_msg=key)


def shard_files(out: Path) -> list[str]:
    return sorted(os.listdir(out / ledger.SHARDS_DIR))


@pytest.fixture(scope="session")
def reference(tree210: tuple[Path, list[str]], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The local engine's output for the 210 photos: two workers, like the cluster's two nodes."""
    out = tmp_path_factory.mktemp("local") / "out"
    report = run(tree210[0], out, workers=2)
    assert report.ok + report.errors == len(tree210[1]) == 210
    return out


def test_ray_matches_local(ray_cluster, tree210, reference, tmp_path) -> None:
    ray_cluster.ensure_workers()
    report = run(tree210[0], tmp_path / "out", engine="ray")
    assert report.complete and report.shards_committed == 14
    assert len(report.workers) == 2  # one actor per worker node
    assert report.ok + report.errors == 210
    assert_same(tmp_path / "out", reference)


def _boot_seconds_at_start(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        ticks = int(f.read().rsplit(")", 1)[1].split()[19])
    return ticks / os.sysconf("SC_CLK_TCK")


def test_actors_start_early_with_one_arena_and_the_shared_weights(ray_cluster, tree210, tmp_path,
                                                                   monkeypatch) -> None:
    """What an actor process looks like, read from /proc while it lives (at its WorkerReady).

    It was started before the driver finished preparing the job (its imports overlap that); its
    environment limits glibc to one arena (its model runs on a non-main thread: without it every
    batch page-faults); it maps the weights file the driver saved instead of building the model.
    """
    from gristmill import driver
    from gristmill.engines.messages import WorkerReady
    from gristmill.engines.ray import RayEngine

    ray_cluster.ensure_workers()
    prepared: list[float] = []
    actors: list[tuple[float, bytes, str]] = []
    real_prepare, real_init = driver.prepare, RayEngine.__init__

    def prepare(*args: Any, **kwargs: Any) -> Any:
        job = real_prepare(*args, **kwargs)
        prepared.append(time.clock_gettime(time.CLOCK_BOOTTIME))
        return job

    def init(self: RayEngine, spec: Any, inputs: str, workers: Any, on_event: Any,
             *rest: Any) -> None:
        def seen(message: Any) -> None:
            if isinstance(message, WorkerReady):
                with open(f"/proc/{message.pid}/environ", "rb") as env, \
                        open(f"/proc/{message.pid}/maps") as maps:
                    actors.append((_boot_seconds_at_start(message.pid), env.read(), maps.read()))
            on_event(message)

        real_init(self, spec, inputs, workers, seen, *rest)

    monkeypatch.setattr(driver, "prepare", prepare)
    monkeypatch.setattr(RayEngine, "__init__", init)
    out = tmp_path / "out"
    assert run(tree210[0], out, engine="ray").complete
    assert len(prepared) == 1 and len(actors) == 2
    weights = os.path.realpath(out / job.CACHE_DIR)
    for started, environ, maps in actors:
        assert started < prepared[0]
        assert b"\0MALLOC_ARENA_MAX=1\0" in b"\0" + environ
        assert weights in maps


def test_ray_resumes_from_markers(ray_cluster, tree210, reference, tmp_path) -> None:
    """A driver that died after some shards is rerun: only the missing shards run again."""
    ray_cluster.ensure_workers()
    out = tmp_path / "out"
    shutil.copytree(reference, out)
    for name in shard_files(out)[-6:]:  # the last three shards and their markers
        os.unlink(out / ledger.SHARDS_DIR / name)
    os.unlink(out / "features.h5")
    report = run(tree210[0], out, engine="ray")
    assert (report.shards_skipped, report.shards_committed) == (11, 3)
    assert_same(out, reference)


def test_node_lost_mid_run(ray_cluster, tree210, reference, tmp_path, caplog) -> None:
    """Kill a worker node (no warning) once shards are being committed: the survivor finishes."""
    ray_cluster.ensure_workers()
    out = tmp_path / "out"
    result: dict[str, Any] = {}
    job = threading.Thread(target=lambda: result.update(
        report=run(tree210[0], out, engine="ray", max_attempts=3)))
    job.start()
    deadline = time.monotonic() + 120
    while not any(n.endswith(".json") for n in _listdir(out / ledger.SHARDS_DIR)):
        assert time.monotonic() < deadline and job.is_alive(), "no shard was committed"
        time.sleep(0.05)
    ray_cluster.kill(ray_cluster.workers[0])
    assert job.is_alive()  # killed mid-run, not after
    job.join(timeout=180)
    assert not job.is_alive()
    assert "Ray worker lost" in caplog.text  # the loss was noticed and its shards requeued
    report = result["report"]
    assert report.complete and report.ok + report.errors == 210
    assert not [n for n in shard_files(out) if n.endswith(".tmp")]
    assert_same(out, reference)


def test_all_nodes_lost_fails_then_resumes(ray_cluster, tree210, reference, tmp_path,
                                           monkeypatch) -> None:
    """With every worker node gone and none coming back, the job fails; committed shards stay."""
    from gristmill.engines import ray as ray_engine

    ray_cluster.ensure_workers()
    out = tmp_path / "out"
    errors: list[BaseException] = []

    def job() -> None:
        try:
            run(tree210[0], out, engine="ray")
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=job)
    thread.start()
    deadline = time.monotonic() + 120
    while not any(n.endswith(".json") for n in _listdir(out / ledger.SHARDS_DIR)):
        assert time.monotonic() < deadline and thread.is_alive(), ("no shard was committed",
                                                                   errors)
        time.sleep(0.05)
    monkeypatch.setattr(ray_engine, "SETUP_TIMEOUT", 3.0)  # not before: setup takes seconds
    for node in list(ray_cluster.workers):
        ray_cluster.kill(node)
    thread.join(timeout=120)
    assert not thread.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], JobFailed), errors
    committed = [n for n in shard_files(out) if n.endswith(".json")]
    assert committed and len(committed) < 14
    monkeypatch.undo()
    ray_cluster.ensure_workers()  # the nodes come back: the same call resumes and completes
    report = run(tree210[0], out, engine="ray")
    assert report.shards_skipped == len(committed) and report.complete
    assert_same(out, reference)


def _listdir(path: Path) -> list[str]:
    try:
        return os.listdir(path)
    except FileNotFoundError:
        return []


def test_ray_tar_and_parquet_jobs_equal_local(ray_cluster, tree210, tmp_path) -> None:
    """Units (whole tars, table row groups) expanded by Ray actors: the local engine's rows."""
    import tarfile

    import pyarrow as pa
    import pyarrow.parquet as pq

    ray_cluster.ensure_workers()
    root, names = tree210
    names = names[:60]
    for t in range(4):  # 4 tars of 15 samples: keys are the names without .jpg
        with tarfile.open(tmp_path / f"{t}.tar", "w") as tar:
            for name in names[t * 15:(t + 1) * 15]:
                tar.add(root / name, arcname=name)
    pq.write_table(pa.table({"key": [n[:-4] for n in names],
                             "jpg": [(root / n).read_bytes() for n in names]}),
                   tmp_path / "t.parquet", row_group_size=10)
    for source in (str(tmp_path / "{0..3}.tar"), str(tmp_path / "t.parquet")):
        tag = "tar" if source.endswith(".tar") else "parquet"
        local = gristmill.run([source], str(tmp_path / f"{tag}-local"), **OPTIONS)
        on_ray = gristmill.run([source], str(tmp_path / f"{tag}-ray"), engine="ray", **OPTIONS)
        assert local.ok == on_ray.ok == 60
        assert_same(tmp_path / f"{tag}-ray", tmp_path / f"{tag}-local")
        assert read(tmp_path / f"{tag}-ray")[0] == [n[:-4] for n in names]  # container order
