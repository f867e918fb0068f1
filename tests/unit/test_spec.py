import dataclasses

import pytest

from gristmill.errors import SpecError
from gristmill.spec import JobSpec, ModelSpec, Preprocess


def spec(**kw):
    return JobSpec(sources=("x",), out="o", **kw)


@pytest.mark.parametrize("field,value,text", [
    ("shard_size", 0, "--shard-size"),
    ("batch_size", -1, "--batch-size"),
    ("workers", -2, "--workers"),
    ("max_attempts", 0, "--max-attempts"),
    ("outputs", ("a", "a"), "twice"),
])
def test_check_rejects_with_the_option_named(field, value, text):
    with pytest.raises(SpecError, match=text):
        spec(**{field: value}).check()


def test_json_round_trip_keeps_every_field():
    s = spec(model=ModelSpec(ref="m.onnx", weights="w"), outputs=("a", "b"),
             preprocess=Preprocess(resize=(10, 20), crop=(8, 8), mean=(1, 2, 3)))
    import json

    again = JobSpec.from_dict(json.loads(s.to_json()))
    assert again == s


def test_identity_ignores_how_the_job_runs_but_not_what_it_computes():
    base = spec()
    assert base.identity() == dataclasses.replace(base, workers=4, batch_size=8,
                                                  device="cpu").identity()
    assert base.identity() != dataclasses.replace(base, shard_size=7).identity()
    assert base.identity() != dataclasses.replace(base, outputs=("logits",)).identity()


def test_preprocess_merges_over_the_preset_and_needs_a_fixed_size():
    preset = Preprocess(resize=256, crop=(224, 224), mean=(1, 1, 1), std=(2, 2, 2),
                        channel_order="RGB", layout="NCHW")
    p = Preprocess(channel_order="BGR", mean=(104, 117, 123)).over(preset).complete()
    assert p.channel_order == "BGR" and p.mean == (104, 117, 123) and p.std == (2, 2, 2)
    assert p.item_shape() == (3, 224, 224)
    assert dataclasses.replace(p, layout="NHWC").item_shape() == (224, 224, 3)
    with pytest.raises(SpecError, match="fixed size"):
        Preprocess(resize=256).complete()
    with pytest.raises(SpecError, match="std"):
        Preprocess(crop=(4, 4), std=(1, 0, 1)).complete()
