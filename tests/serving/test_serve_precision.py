"""Serving precision and sub-batching: what runs in bf16, when, and that answers do not change."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from tunelab.errors import ConfigError
from tunelab.inference.precision import inference_autocast, store_linears_as
from tunelab.models.int8 import quantize_int8
from tunelab.models.run_info import CPU_BF16_ENV
from tunelab.serving.predictor import Predictor, load_predictor

TEXTS = [
    "a long review that goes on and on about the plot, the actors and the score " * 3,
    "fine",
    "not good at all",
    "the best film of the year, with a cast that works and a script that never drags",
    "meh",
]


def _linear_dtypes(predictor: Predictor) -> tuple[list[dict[str, Any]], set[torch.dtype]]:
    """The predictions and the dtypes the model's Linear layers produced while making them."""
    assert predictor.artifact is not None
    seen: set[torch.dtype] = set()
    hooks = [
        m.register_forward_hook(lambda mod, args, out: seen.add(out.dtype))
        for m in predictor.artifact.model.modules()
        if isinstance(m, torch.nn.Linear)
    ]
    try:
        records = predictor.predict([{"text": t} for t in TEXTS])
    finally:
        for h in hooks:
            h.remove()
    return records, seen


def test_auto_serves_bf16_on_native_cpus_with_the_fp32_scores(classifier_dir: Path, monkeypatch):
    monkeypatch.setenv(CPU_BF16_ENV, "1")
    fp32 = load_predictor(str(classifier_dir), precision="fp32")
    auto = load_predictor(str(classifier_dir), precision="auto")
    assert fp32.autocast is None
    assert auto.autocast is torch.bfloat16
    assert auto.artifact is not None
    model = auto.artifact.model
    linear = next(m for m in model.modules() if isinstance(m, torch.nn.Linear))
    norm = next(m for m in model.modules() if isinstance(m, torch.nn.LayerNorm))
    assert linear.weight.dtype is torch.bfloat16  # stored once, not cast again in every call
    assert norm.weight.dtype is torch.float32
    want, fp32_dtypes = _linear_dtypes(fp32)
    got, auto_dtypes = _linear_dtypes(auto)
    assert fp32_dtypes == {torch.float32}
    assert auto_dtypes == {torch.bfloat16}
    for w, g in zip(want, got, strict=True):
        assert g["probabilities"].keys() == w["probabilities"].keys()
        for label, score in w["probabilities"].items():
            assert g["probabilities"][label] == pytest.approx(score, abs=2e-2)


def test_auto_keeps_fp32_without_native_bf16_and_for_int8(classifier_dir: Path, monkeypatch):
    monkeypatch.setenv(CPU_BF16_ENV, "0")
    assert load_predictor(str(classifier_dir), precision="auto").autocast is None
    with pytest.raises(ConfigError, match="precision: bf16 needs a CPU with avx512_bf16"):
        load_predictor(str(classifier_dir), precision="bf16")
    monkeypatch.setenv(CPU_BF16_ENV, "1")
    predictor = load_predictor(str(classifier_dir), precision="fp32")
    assert predictor.artifact is not None
    int8 = quantize_int8(predictor.artifact.model)
    assert inference_autocast("auto", torch.device("cpu"), int8) is None
    assert inference_autocast("bf16", torch.device("cpu"), int8) is torch.bfloat16  # asked for: obeyed


def test_sub_batches_give_the_one_batch_answers_in_input_order(classifier_dir: Path):
    whole = load_predictor(str(classifier_dir), sub_batch_size=len(TEXTS))
    split = load_predictor(str(classifier_dir), sub_batch_size=2)
    want, got = whole.predict([{"text": t} for t in TEXTS]), split.predict([{"text": t} for t in TEXTS])
    assert [g["label"] for g in got] == [w["label"] for w in want]
    for w, g in zip(want, got, strict=True):
        for label, score in w["probabilities"].items():
            assert g["probabilities"][label] == pytest.approx(score, abs=1e-5)


def test_a_linear_tied_to_an_embedding_keeps_its_dtype():
    embed = torch.nn.Embedding(10, 4)
    head, hidden = torch.nn.Linear(4, 10, bias=False), torch.nn.Linear(4, 4)
    head.weight = embed.weight  # tied, as a causal LM's output layer often is
    model = torch.nn.ModuleDict({"embed": embed, "hidden": hidden, "head": head})
    store_linears_as(model, torch.bfloat16)
    assert hidden.weight.dtype is torch.bfloat16
    assert head.weight.dtype is torch.float32
    assert embed.weight.dtype is torch.float32
