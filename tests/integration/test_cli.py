"""The command line as users run it: exit codes, one-line errors, kill and resume."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from jobhelp import TESTS, alive, cli
from reliability.faultkit import descendants

import gristmill

pytestmark = pytest.mark.slow


def one_line(result: subprocess.CompletedProcess) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def test_wrong_model_path_exits_2_with_one_line(small_tree, tmp_path):
    root, _ = small_tree
    result = cli("run", str(root), "-o", str(tmp_path / "o"), "--model", "nowhere/model.onnx")
    assert result.returncode == 2
    assert "nowhere/model.onnx does not exist" in one_line(result)
    assert not (tmp_path / "o").exists()


def test_unknown_output_exits_2_naming_it(small_tree, tmp_path):
    root, _ = small_tree
    result = cli("run", str(root), "-o", str(tmp_path / "o"), "--outputs", "features,pool9")
    assert result.returncode == 2
    line = one_line(result)
    assert "'pool9'" in line and "features" in line


def test_missing_and_unreadable_sources_exit_2(tmp_path):
    result = cli("run", str(tmp_path / "absent"), "-o", str(tmp_path / "o"))
    assert result.returncode == 2 and "absent does not exist" in one_line(result)
    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / "a.jpg").write_bytes(b"x")
    locked.chmod(0o000)
    # root reads anything; without the DAC capabilities it obeys file modes like any user
    prefix = ["setpriv", "--bounding-set=-dac_override,-dac_read_search"] if os.geteuid() == 0 \
        else []
    if prefix and not shutil.which("setpriv"):
        pytest.skip("running as root without setpriv: cannot make a folder unreadable")
    try:
        result = cli("run", str(locked), "-o", str(tmp_path / "o"), prefix=prefix)
    finally:
        locked.chmod(0o755)
    assert result.returncode == 2
    assert "locked cannot be read: Permission denied" in one_line(result)


def test_bad_option_value_exits_2(tmp_path):
    result = cli("run", str(tmp_path), "-o", str(tmp_path / "o"), "--crop", "axb")
    assert result.returncode == 2 and "--crop" in one_line(result)


def test_two_cpu_workers_each_load_the_model_once(small_tree, tmp_path):
    root, names = small_tree
    loads = tmp_path / "loads.txt"
    result = cli("run", str(root), "-o", str(tmp_path / "o"), "--model",
                 "models_for_tests:counting_cnn", "--workers", "2", "--shard-size", "4",
                 "--batch-size", "4", "--device", "cpu", "--report", str(tmp_path / "r.json"),
                 env={"GRISTMILL_TEST_LOADS": str(loads)})
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    workers = {w["pid"] for w in report["workers"]}
    pids = loads.read_text().split()
    # the driver builds it once to check the outputs; each worker builds it exactly once
    assert len(workers) == 2
    assert sorted(int(p) for p in pids if int(p) in workers) == sorted(workers)
    assert len(pids) == 3
    with gristmill.open(str(tmp_path / "o")) as r:
        assert r.names == names and r["output"].shape == (len(names), 5)


def test_sigkill_of_the_driver_then_rerun_finishes_without_recomputing(job_tree, reference,
                                                                       tmp_path):
    root, _ = job_tree
    ref_out, _ = reference
    out = tmp_path / "o"
    args = ["run", str(root), "-o", str(out), "--outputs", "features,logits", "--shard-size", "8",
            "--batch-size", "8", "--no-progress"]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(TESTS), *sys.path]))
    driver = subprocess.Popen([sys.executable, "-m", "gristmill", *args], env=env,
                              stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    markers: list[str] = []
    while time.monotonic() < deadline and len(markers) < 4:
        time.sleep(0.1)
        if (out / "shards").exists():
            markers = [n for n in os.listdir(out / "shards") if n.endswith(".json")]
    workers = descendants(driver.pid)  # fork server, workers, loaders
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    assert 4 <= len(markers) < 17, "the kill should land mid-run"
    for pid in workers:  # workers and loaders follow their parent
        for _ in range(100):
            if not alive(pid):
                break
            time.sleep(0.05)
        else:
            pytest.fail(f"process {pid} outlived the killed driver")
    before = {n: os.stat(out / "shards" / n) for n in os.listdir(out / "shards")
              if n.endswith(".json")}
    result = cli(*args, "--report", str(tmp_path / "r.json"))
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["shards_skipped"] == len(before)
    assert report["shards_committed"] == 17 - len(before)
    for name, st in before.items():  # committed shards were not written again
        again = os.stat(out / "shards" / name)
        assert (again.st_ino, again.st_mtime_ns) == (st.st_ino, st.st_mtime_ns)
    with gristmill.open(str(out)) as got, gristmill.open(str(ref_out)) as ref:
        assert got.names == ref.names
        assert sorted(got.errors) == sorted(ref.errors)
        np.testing.assert_allclose(got["features"][()], ref["features"][()], atol=1e-6, rtol=0)
    assert not [n for n in os.listdir(out / "shards") if n.endswith(".tmp")]
