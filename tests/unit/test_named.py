"""Several named models: parsing ``--model NAME=REF[@OTHER/OUTPUT]`` and per-model options, the
checks made before anything starts, and one-model jobs left exactly as they were."""

from __future__ import annotations

import dataclasses

import pytest

from gristmill.cli import build_parser, spec_from_args
from gristmill.errors import SpecError
from gristmill.named import order, parse_model, split_named
from gristmill.spec import JobSpec, ModelSpec, Preprocess


def args(*extra: str) -> JobSpec:
    return spec_from_args(build_parser().parse_args(["run", "photos", "-o", "out", *extra]))


def test_parse_model_forms() -> None:
    assert parse_model("resnet.onnx") == ("", "resnet.onnx", "")
    assert parse_model("pkg.mod:factory") == ("", "pkg.mod:factory", "")
    assert parse_model("clip=hf:./clip") == ("clip", "hf:./clip", "")
    assert parse_model("aes=heads:Aesthetic@clip/image_embeds") == (
        "aes", "heads:Aesthetic", "clip/image_embeds")
    assert split_named("nsfw=224x224", "crop") == ("nsfw", "224x224")
    assert split_named("224x224", "crop") == ("", "224x224")


def test_one_model_job_keeps_its_spec_and_identity() -> None:
    # the hashes of these two specs before several models existed: existing OUT folders resume
    plain = JobSpec(sources=("p",), out="o")
    assert plain.identity_hash() == "0621cf4128037c2c"
    full = JobSpec(sources=("p",), out="o", outputs=("f",), format="npy", precision="bf16",
                   model=ModelSpec(ref="x.onnx", weights="/w", normalize=True),
                   preprocess=Preprocess(resize=256, crop=(224, 224)))
    assert full.identity_hash() == "c00fa27a11ced427"
    spec = args("--model", "efficientnet-lite0", "--crop", "200x200")
    assert spec.models == () and spec.model == ModelSpec(ref="efficientnet-lite0")
    assert spec.preprocess == Preprocess(crop=(200, 200))
    assert args().model == ModelSpec()


def test_named_models_and_per_model_options() -> None:
    spec = args("--model", "clip=hf:./clip", "--model", "nsfw=nsfw.onnx", "--model",
                "aes=heads:Aes@clip/image_embeds", "--crop", "nsfw=224x224", "--resize", "300",
                "--weights", "nsfw=w.safetensors", "--mean", "nsfw=1,2,3", "--layout",
                "nsfw=NHWC", "--outputs", "clip/image_embeds,aes/score")
    clip, nsfw, aes = spec.models
    assert (clip.name, clip.ref, clip.preprocess) == ("clip", "hf:./clip", None)
    assert nsfw.preprocess == Preprocess(crop=(224, 224), mean=(1.0, 2.0, 3.0), layout="NHWC")
    assert nsfw.weights == "w.safetensors" and clip.weights is None
    assert (aes.ref, aes.input) == ("heads:Aes", "clip/image_embeds")
    assert spec.preprocess == Preprocess(resize=300) and spec.model == ModelSpec()
    spec.check()
    again = JobSpec.from_dict(dataclasses.asdict(spec))
    assert again == spec and again.identity() == spec.identity()
    assert "models" in spec.identity() and "models" not in args().identity()


@pytest.mark.parametrize(("extra", "message"), [
    (["--model", "a=x:y", "--model", "a=x:z"], "the name 'a' is given twice"),
    (["--model", "a=x:y", "--model", "x:z"], "give every model a name"),
    (["--model", "a=x:y", "--model", "h=x:h@b/out"], "no model is named 'b'"),
    (["--model", "a=x:y", "--model", "h=x:h@h/out"], "cycle: h -> h"),
    (["--model", "a=x:y", "--model", "g=x:h@h/o", "--model", "h=x:h@g/o"], "cycle: g -> h -> g"),
    (["--model", "a=x:y", "--outputs", "features"], "an output is NAME/OUTPUT"),
    (["--model", "a=x:y", "--outputs", "b/features"], "an output is NAME/OUTPUT"),
    (["--model", "a=x:y", "--model", "h=x:h@a/o", "--crop", "h=9x9"], "takes no image"),
    (["--model", "a=x:y", "--crop", "z=9x9"], "no --model is named 'z'"),
    (["--model", "a=x:y", "--weights", "w.pt"], "--weights NAME=PATH"),
    (["--model", "metadata=x:y", "--format", "npy"], "'metadata' is reserved"),
    (["--model", "a=x:y", "--modality", "text"], "--modality text runs one model"),
])
def test_bad_models_are_one_line_spec_errors(extra, message) -> None:
    with pytest.raises(SpecError, match=None) as caught:
        args(*extra).check()
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_heads_run_after_their_input() -> None:
    models = [ModelSpec(name="h2", input="h1/o"), ModelSpec(name="h1", input="a/o"),
              ModelSpec(name="a")]
    assert [m.name for m in order(models)] == ["a", "h1", "h2"]


def test_an_unnamed_model_given_twice_is_the_last_one_as_before() -> None:
    spec = args("--model", "a.onnx", "--model", "b.onnx")
    assert (spec.model.ref, spec.models) == ("b.onnx", ())
