"""Ray engine policy and validation, without a cluster: actor planning, addresses, missing Ray."""

from __future__ import annotations

import sys

import pytest

from gristmill.cli import main
from gristmill.engines.ray_worker import plan_actors
from gristmill.errors import SpecError
from gristmill.spec import JobSpec


def spec(**options) -> JobSpec:
    return JobSpec(sources=("x",), out="o", batch_size=8, **options)


def test_cpu_nodes_one_actor_per_node_by_default() -> None:
    shape = plan_actors(spec(device="auto"), [{"CPU": 8.0}, {"CPU": 8.0}, {"CPU": 0.0}])
    assert (shape.count, shape.num_cpus, shape.num_gpus, shape.device) == (2, 8.0, 0.0, "cpu")
    assert (shape.threads, shape.loaders) == (8, 8)


def test_cpu_threads_split_nodes_into_groups() -> None:
    shape = plan_actors(spec(device="cpu", threads=4, loaders=2), [{"CPU": 8.0}, {"CPU": 6.0}])
    assert (shape.count, shape.num_cpus, shape.loaders) == (3, 4.0, 2)
    assert shape.plan(5, spec(threads=4, loaders=2)).slots == 4


def test_gpu_one_actor_per_gpu() -> None:
    nodes = [{"CPU": 16.0, "GPU": 4.0}, {"CPU": 8.0, "GPU": 2.0}, {"CPU": 4.0}]
    shape = plan_actors(spec(device="auto"), nodes)
    assert (shape.count, shape.num_gpus, shape.device, shape.loaders) == (6, 1.0, "cuda:0", 3)
    assert plan_actors(spec(device="cpu"), nodes).device == "cpu"


@pytest.mark.parametrize(("options", "nodes", "match"), [
    ({"device": "cuda"}, [{"CPU": 4.0}], "no GPU"),
    ({"device": "cuda:0,1"}, [{"CPU": 4.0}], "Ray assigns"),
    ({"device": "cuda", "workers": 3}, [{"CPU": 4.0, "GPU": 2.0}], "more than the 2 GPU"),
    ({"device": "cpu", "threads": 8}, [{"CPU": 4.0}], "does not fit"),
    ({"device": "cpu"}, [{"CPU": 0.0}], "no node with a CPU"),
])
def test_impossible_placements_are_spec_errors(options, nodes, match) -> None:
    with pytest.raises(SpecError, match=match):
        plan_actors(spec(**options), nodes)


@pytest.mark.parametrize("address", ["auto", "ray://head:10001", "ray://head", "10.0.0.5:6379"])
def test_ray_addresses_accepted(address: str) -> None:
    spec(engine="ray", ray_address=address).check()


@pytest.mark.parametrize(("options", "match"), [
    ({"engine": "ray", "ray_address": "http://x:1"}, "must be auto"),
    ({"engine": "ray", "ray_address": "head"}, "must be auto"),
    ({"ray_address": "auto"}, "only used with --engine ray"),
])
def test_bad_ray_addresses_rejected(options, match: str) -> None:
    with pytest.raises(SpecError, match=match):
        spec(**options).check()


def test_engine_ray_without_ray_exits_2_with_install_command(monkeypatch, capsys,
                                                            tmp_path) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # as if the extra were not installed
    (tmp_path / "in").mkdir()
    code = main(["run", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--engine", "ray",
                 "--device", "cpu"])
    assert code == 2
    assert "pip install 'gristmill[ray]'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # nothing was created
