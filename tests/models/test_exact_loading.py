"""Loading is exact: a saved model comes back as the same modules and weights wherever it is loaded.

Models whose structure a method or an export changed (MoE-upcycled, FFN-neuron pruned) and models
tunelab builds itself (``from_scratch``) are trained, saved as a run's ``best/`` and read back by the
one reader of predict / eval / export (``load_artifact``), re-exported, and served; each must equal
the in-memory model tensor for tensor. A directory whose weights do not fit the structure its files
describe is refused with a one-line ``CheckpointError``, never loaded with re-initialised tensors.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file

from served_models import TEXTS, ArtifactCache, check_served, serve, train_and_save
from toy_tasks import TOY_TASKS
from tunelab.errors import CheckpointError, TunelabError
from tunelab.export import prune
from tunelab.export.merge import output_tensors
from tunelab.export.pipeline import ExportOptions, export_model
from tunelab.inference.artifact import load_artifact
from tunelab.models.artifact import save_model
from tunelab.models.run_info import RUN_FILE
from tunelab.serving.predictor import load_predictor

SCRATCH_TASK = {"bert": "lm_pretrain", "modernbert": "lm_pretrain", "llama": "lm_pretrain", "t5": "seq2seq"}


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory, tiny_backbone_dir: Path) -> ArtifactCache:
    return ArtifactCache(tmp_path_factory.mktemp("exact"), tiny_backbone_dir)


def scratch_run(saved: ArtifactCache, architecture: str) -> tuple[torch.nn.Module, Path]:
    """A two-step run of a model tunelab builds from scratch (``task.params.from_scratch``)."""
    task = SCRATCH_TASK[architecture]
    work = saved.root / f"scratch-{architecture}"
    work.mkdir()
    sections = TOY_TASKS[task](work)
    scratch = {"architecture": architecture, "vocab_size": 200, "min_frequency": 1}
    scratch |= {"hidden_size": 32, "layers": 1, "heads": 2, "max_position_embeddings": 64}
    params = {**sections["task"]["params"], "from_scratch": scratch}
    if architecture == "llama":
        params["objective"] = "clm"
    sections |= {"model": {"name_or_path": "scratch"}, "task": {"name": task, "params": params}}
    return train_and_save(work, saved.backbone, sections, [{"name": "full"}])  # type: ignore[no-any-return]


def neuron_pruned(saved: ArtifactCache) -> tuple[torch.nn.Module, Path]:
    """The full classification run with half its FFN neurons removed, saved as training saves."""
    key = ("classification", "neurons")
    if key not in saved.built:
        art = load_artifact(saved.run("classification", "full"))
        assert prune.prune_ffn_neurons(art.model, 0.5) == 32
        save_model(art.model, art.tokenizer, saved.root / "neurons", art.info)
        saved.trained[key], saved.built[key] = art.model, saved.root / "neurons"
    return saved.trained[key], saved.built[key]


def trained(task: str, method: str) -> Callable[[ArtifactCache], tuple[torch.nn.Module, Path]]:
    def build(saved: ArtifactCache) -> tuple[torch.nn.Module, Path]:
        path = saved.run(task, method)
        return saved.trained[task, method], path

    return build


BUILDS: dict[str, Callable[[ArtifactCache], tuple[torch.nn.Module, Path]]] = {
    "moe-bert": trained("classification", "moe"),
    "moe-llama": trained("causal_lm", "moe"),
    "pruned-neurons": neuron_pruned,
    **{f"scratch-{arch}": (lambda s, a=arch: scratch_run(s, a)) for arch in SCRATCH_TASK},
}


def assert_same_model(got: torch.nn.Module, want: torch.nn.Module) -> None:
    """Same module tree (names and classes) and bit-identical tensors."""
    assert [(n, type(m)) for n, m in got.named_modules()] == [(n, type(m)) for n, m in want.named_modules()]
    got_state, want_state = got.state_dict(), want.state_dict()
    assert got_state.keys() == want_state.keys()
    different = [k for k in want_state if not torch.equal(got_state[k], want_state[k])]
    assert not different, different[:5]


@pytest.mark.parametrize("case", list(BUILDS))
def test_saved_model_loads_as_the_trained_one_everywhere(saved: ArtifactCache, case: str, tmp_path: Path):
    model, path = BUILDS[case](saved)
    loaded = load_artifact(path)
    assert_same_model(loaded.model, model)
    batch = loaded.tokenizer(TEXTS, padding=True, return_tensors="pt")
    if getattr(loaded.model.config, "is_encoder_decoder", False):
        batch["labels"] = batch["input_ids"]  # the decoder's inputs
    with torch.no_grad():
        got, want = output_tensors(loaded.model(**batch)), output_tensors(model(**batch))
    assert got.keys() == want.keys()
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=0, atol=0)

    export_model(path, tmp_path / "copy", ExportOptions(latency_repeats=1))  # a plain re-export
    assert_same_model(load_artifact(tmp_path / "copy").model, model)

    with serve(path) as client:  # the server's answers are predict's on the in-memory model
        check_served(client, dataclasses.replace(loaded, model=model))


def test_neuron_pruning_export_records_the_smaller_width(saved: ArtifactCache, tmp_path: Path):
    """The exporter's own pruning: config.json carries the new width and the model reloads exactly."""
    opts = ExportOptions(prune="neurons", prune_amount=0.5, recovery_steps=1, latency_repeats=1)
    record = export_model(saved.run("classification", "full"), tmp_path / "pruned", opts)
    assert record.pruned is not None
    assert record.pruned["intermediate_size"] == 32
    assert json.loads((tmp_path / "pruned" / "config.json").read_text())["intermediate_size"] == 32
    model = load_artifact(tmp_path / "pruned").model
    assert all(layer.intermediate.dense.out_features == 32 for layer in model.bert.encoder.layer)


def edit_json(path: Path, change: Callable[[dict[str, Any]], None]) -> None:
    raw = json.loads(path.read_text())
    change(raw)
    path.write_text(json.dumps(raw))


def edit_weights(path: Path, change: Callable[[dict[str, torch.Tensor]], None]) -> None:
    state = load_file(path)
    change(state)
    save_file(state, path, metadata={"format": "pt"})


def drop_first(suffix: str) -> Callable[[dict[str, torch.Tensor]], None]:
    def change(state: dict[str, torch.Tensor]) -> None:
        del state[next(k for k in sorted(state) if k.endswith(suffix))]

    return change


def set_methods(methods: list[dict[str, Any]]) -> Callable[[dict[str, Any]], None]:
    def change(raw: dict[str, Any]) -> None:
        raw["config"]["methods"] = methods

    return change


def restore_width(raw: dict[str, Any]) -> None:
    raw["intermediate_size"] = 64


# name -> (saved model it starts from, file it damages, the damage, what the error says)
DAMAGES: dict[str, tuple[str, str, Callable[[Any], None], str]] = {
    "missing-head": ("full", "model.safetensors", drop_first("classifier.weight"), r"missing \['classifier"),
    "unexpected-tensor": (
        "full",
        "model.safetensors",
        lambda state: state.update({"extra.weight": torch.zeros(2)}),
        r"unexpected \['extra.weight'\]",
    ),
    "config-lacks-pruned-sizes": ("neurons", "config.json", restore_width, "do not match config.json"),
    "unknown-method": ("moe", RUN_FILE, set_methods([{"name": "nosuch"}]), "nosuch"),
    "moe-weights-without-moe": ("moe", RUN_FILE, set_methods([{"name": "full"}]), "unexpected"),
    "other-expert-count": (
        "moe",
        RUN_FILE,
        set_methods([{"name": "moe", "params": {"n_routed_experts": 8, "granularity": 2}}]),
        "do not match the rebuilt model",
    ),
    "adapter-missing-tensor": ("lora", "adapter_model.safetensors", drop_first("lora_A.weight"), "missing"),
    "adapter-stray-tensor": (
        "lora",
        "adapter_model.safetensors",
        lambda state: state.update({"base_model.model.extra.lora_A.weight": torch.zeros(2, 2)}),
        "unexpected",
    ),
}


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_unknown_structure_is_refused_in_one_line(saved: ArtifactCache, damage: str, tmp_path: Path):
    source, file, change, message = DAMAGES[damage]
    origin = neuron_pruned(saved)[1] if source == "neurons" else saved.run("classification", source)
    path = tmp_path / "damaged"
    shutil.copytree(origin, path)
    (edit_weights if file.endswith(".safetensors") else edit_json)(path / file, change)
    with pytest.raises(CheckpointError, match=message) as err:
        load_artifact(path)
    assert "\n" not in str(err.value)
    with pytest.raises(TunelabError):  # the server refuses it the same way
        load_predictor(str(path))
