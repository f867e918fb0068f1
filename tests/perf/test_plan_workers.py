"""plan_workers turns calibrated rates into worker plans; user sizes still win."""

from __future__ import annotations

import pytest

from gristmill import job
from gristmill.errors import SpecError
from gristmill.spec import JobSpec


@pytest.fixture
def two_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(job, "cpu_count", lambda: 2)


def test_model_bound_rates_give_the_model_both_cores(two_cores: None) -> None:
    spec = JobSpec(sources=("x",), out="o")
    (plan,) = job.plan_workers(spec, ["cpu"], 32, rates=(300.0, 8.0))
    assert (plan.threads, plan.loaders, plan.slots, plan.batch_size) == (2, 1, 3, 32)


def test_explicit_sizes_are_kept(two_cores: None) -> None:
    spec = JobSpec(sources=("x",), out="o", workers=4, threads=1, loaders=2)
    plans = job.plan_workers(spec, ["cpu"], 8, rates=(300.0, 8.0))
    assert len(plans) == 4 and all((p.threads, p.loaders) == (1, 2) for p in plans)
    assert not job.needs_calibration(spec, ["cpu"])


def test_workers_that_outnumber_the_cores_take_turns(two_cores: None) -> None:
    crowded = JobSpec(sources=("x",), out="o", workers=4, threads=1)
    assert {p.turns for p in job.plan_workers(crowded, ["cpu"], 8)} == {2}
    fitting = JobSpec(sources=("x",), out="o", workers=2, threads=1)
    assert {p.turns for p in job.plan_workers(fitting, ["cpu"], 8)} == {0}
    assert {p.turns for p in job.plan_workers(JobSpec(sources=("x",), out="o"), ["cpu"], 8,
                                              rates=(300.0, 8.0))} == {0}


def test_gpus_get_one_worker_each(two_cores: None) -> None:
    spec = JobSpec(sources=("x",), out="o")
    plans = job.plan_workers(spec, ["cuda:0", "cuda:1"], 128)
    assert [p.device for p in plans] == ["cuda:0", "cuda:1"]
    assert not job.needs_calibration(spec, ["cuda:0"])
    with pytest.raises(SpecError):
        job.plan_workers(JobSpec(sources=("x",), out="o", workers=3), ["cuda:0"], 128)


def test_precision_is_part_of_the_identity_only_when_not_fp32() -> None:
    base = JobSpec(sources=("x",), out="o")
    assert "precision" not in base.identity()
    assert JobSpec(sources=("x",), out="o", precision="bf16").identity()["precision"] == "bf16"
    with pytest.raises(SpecError):
        JobSpec(sources=("x",), out="o", precision="fp8").check()  # type: ignore[arg-type]


def test_a_job_of_one_batch_is_not_calibrated_and_gives_the_model_every_core(
        two_cores: None, small_tree, tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A probe of decodes and a model batch costs more than a one-batch job could gain."""
    root, names = small_tree
    probes = []
    monkeypatch.setattr(job, "calibrate", lambda *a, **k: probes.append(1) or (300.0, 8.0))
    spec = JobSpec(sources=(str(root),), out=str(tmp_path / "one"), device="cpu",
                   batch_size=len(names))
    (plan,) = job.prepare(spec).workers
    assert probes == [] and (plan.threads, plan.loaders) == (2, 1)
    job.prepare(JobSpec(sources=(str(root),), out=str(tmp_path / "two"), device="cpu",
                        batch_size=len(names) - 1))
    assert probes == [1]  # two batches: calibrated


def test_a_job_of_one_batch_runs_it_in_two_halves_unless_the_user_chose_the_size() -> None:
    from gristmill.job import one_batch_size

    assert one_batch_size(32, 32, chosen=True) == 16
    assert one_batch_size(31, 32, chosen=True) == 16  # 16 + 15
    assert one_batch_size(1, 32, chosen=True) == 1
    assert one_batch_size(20, 64, chosen=False) == 64
