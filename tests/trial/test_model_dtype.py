"""The weights' dtype: a half-precision checkpoint trains in float32 unless the study asks otherwise.

Under Transformers 5 a model loads in the dtype its checkpoint stores. Many checkpoints on the Hub are
stored in float16 or bfloat16; trained as loaded, their weights stay in half precision and most of each
update is rounded away (tried with an fp16 copy of all-MiniLM-L6-v2 on the quickstart's data, the objective
fell from 0.86 to 0.24). The recipe trains in float32 weights by default (``trainer.modelDtype``); mixed
precision is the ``bf16``/``fp16`` training arguments' job. These tests build the tiny offline model,
save it in float16, and train it through the recipe.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from hpo_trial import recipe
from hpo_trial.trainer_spec import TrainerSpecError, validate_trainer
from safetensors import safe_open
from sentence_transformers import SentenceTransformer

from tests.trial.helpers import TinyData


@pytest.fixture(scope="module")
def half_model(tiny_model: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The tiny model saved in float16, as a half-precision checkpoint on the Hub is stored."""
    path = tmp_path_factory.mktemp("tiny-bert-fp16")
    SentenceTransformer(tiny_model, device="cpu").half().save(str(path))
    return str(path)


def float_dtypes(model: torch.nn.Module) -> set[torch.dtype]:
    return {p.dtype for p in model.parameters() if p.is_floating_point()}


def saved_dtypes(directory: Path) -> set[str]:
    """The dtypes of every tensor in the safetensors files a saved model holds."""
    found: set[str] = set()
    files = sorted(directory.rglob("*.safetensors"))
    assert files, f"no safetensors file under {directory}"
    for f in files:
        with safe_open(str(f), framework="pt") as st:
            for key in st.keys():  # noqa: SIM118 (safe_open is not a mapping)
                tensor = st.get_tensor(key)
                if tensor.is_floating_point():
                    found.add(str(tensor.dtype))
    return found


def recipe_for(model: str, data: TinyData, **extra: Any) -> dict[str, Any]:
    trainer: dict[str, Any] = {
        "model": model,
        "train": {"files": data.pairs_train},
        "loss": {"name": "CoSENTLoss"},
        "evaluator": {
            "name": "EmbeddingSimilarityEvaluator",
            "dataset": {"files": data.pairs_dev},
            "args": {"name": "sts-dev"},
        },
        "arguments": {
            "per_device_train_batch_size": 8,
            "num_train_epochs": 2,
            "learning_rate": 1e-3,
            "use_cpu": True,
            "seed": 3,
        },
    }
    trainer.update(extra)
    return trainer


def train(trainer: dict[str, Any], out: Path) -> tuple[torch.nn.Module, float]:
    """Train one trial's recipe in this process; the trained model and its Spearman on the dev pairs."""
    r = recipe.prepare(validate_trainer(trainer), {}, str(out))
    t = recipe.make_trainer(r)
    t.train()
    t.save_model(str(out / "model"))
    return r.model, float(t.evaluate()["eval_sts-dev_spearman_cosine"])


def test_the_checkpoint_is_half_precision(half_model: str) -> None:
    """The premise: the library alone loads this checkpoint in float16 (so training it as loaded would be
    training in float16 weights)."""
    config = json.loads((Path(half_model) / "config.json").read_text())
    assert config.get("dtype", config.get("torch_dtype")) == "float16"
    assert float_dtypes(SentenceTransformer(half_model, device="cpu")) == {torch.float16}


def test_a_half_precision_checkpoint_trains_in_float32(
    half_model: str, tiny_model: str, tiny_data: TinyData, tmp_path: Path
) -> None:
    model, value = train(recipe_for(half_model, tiny_data), tmp_path / "fp16-checkpoint")

    assert float_dtypes(model) == {torch.float32}
    assert saved_dtypes(tmp_path / "fp16-checkpoint" / "model") == {"torch.float32"}
    # Trained in float32, the float16 checkpoint ends where the float32 original ends (their weights
    # differ only by float16 rounding), and training moved it.
    _, reference = train(recipe_for(tiny_model, tiny_data), tmp_path / "fp32-checkpoint")
    untrained = SentenceTransformer(tiny_model, device="cpu")
    spec = validate_trainer(recipe_for(tiny_model, tiny_data))
    assert spec.evaluator is not None
    before = recipe.build_evaluator(spec.evaluator, None)(untrained)["sts-dev_spearman_cosine"]
    assert value == pytest.approx(reference, abs=0.02), (value, reference)
    assert value > before + 0.03, (value, before)


def test_a_study_may_ask_for_another_dtype(half_model: str, tiny_model: str, tiny_data: TinyData) -> None:
    auto = recipe.build_model(validate_trainer(recipe_for(half_model, tiny_data, modelDtype="auto")))
    assert float_dtypes(auto) == {torch.float16}  # the checkpoint's own dtype
    bf16 = recipe.build_model(validate_trainer(recipe_for(tiny_model, tiny_data, modelDtype="bfloat16")))
    assert float_dtypes(bf16) == {torch.bfloat16}
    fp32 = recipe.build_model(validate_trainer(recipe_for(half_model, tiny_data, modelDtype="float32")))
    assert float_dtypes(fp32) == {torch.float32}


def test_every_module_is_cast_not_only_the_backbone(
    tiny_model: str, tiny_data: TinyData, tmp_path: Path
) -> None:
    """A module after the backbone (here a Dense layer) saved in float16 ends in float32 too."""
    from sentence_transformers.sentence_transformer.modules import Dense

    base = SentenceTransformer(tiny_model, device="cpu")
    dim = base.get_embedding_dimension()
    assert dim is not None
    SentenceTransformer(modules=[*base, Dense(dim, 8)], device="cpu").half().save(str(tmp_path / "dense"))
    model = recipe.build_model(validate_trainer(recipe_for(str(tmp_path / "dense"), tiny_data)))
    assert isinstance(model[-1], Dense) and float_dtypes(model) == {torch.float32}
    # Whatever the library loads a module in, the runner's cast leaves no half-precision weight.
    recipe.set_model_dtype(model.half(), "float32")
    assert float_dtypes(model) == {torch.float32}
    recipe.set_model_dtype(model, "bfloat16")
    assert float_dtypes(model) == {torch.bfloat16}


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            {"modelDtype": "fp16"},
            r"^trainer.modelDtype: must be one of float32, bfloat16, float16.*; got 'fp16'",
        ),
        (
            {"modelArgs": {"model_kwargs": {"torch_dtype": "float16"}}},
            r"^trainer.modelArgs.model_kwargs.torch_dtype: set trainer.modelDtype instead",
        ),
        (
            {"modelArgs": {"model_kwargs": {"dtype": "auto"}}},
            r"^trainer.modelArgs.model_kwargs.dtype: set trainer.modelDtype instead",
        ),
        ({"modelArgs": {"model_kwargs": "x"}}, r"^trainer.modelArgs.model_kwargs: must be an object"),
    ],
)
def test_the_dtype_is_set_in_one_place(
    tiny_model: str, tiny_data: TinyData, extra: dict[str, Any], message: str
) -> None:
    with pytest.raises(TrainerSpecError, match=message):
        validate_trainer(recipe_for(tiny_model, tiny_data, **extra))


def test_the_default_is_float32_and_other_model_kwargs_pass_through(
    tiny_model: str, tiny_data: TinyData
) -> None:
    spec = validate_trainer(
        recipe_for(tiny_model, tiny_data, modelArgs={"model_kwargs": {"attn_implementation": "eager"}})
    )
    assert spec.model_dtype == "float32" and "modelDtype" not in spec.to_dict()
    assert recipe.model_load_kwargs(spec) == {
        "model_kwargs": {"attn_implementation": "eager", "dtype": "float32"}
    }
    auto = validate_trainer(recipe_for(tiny_model, tiny_data, modelDtype="auto"))
    assert recipe.model_load_kwargs(auto) == {}
    assert auto.to_dict()["modelDtype"] == "auto"
