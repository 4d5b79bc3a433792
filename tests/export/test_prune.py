"""Pruning: zeros survive recovery and saving; FFN-neuron pruning yields a smaller plain HF model."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForSequenceClassification

from tunelab.errors import ExportError
from tunelab.export import prune
from tunelab.export.pipeline import export_model
from tunelab.inference.artifact import load_artifact
from tunelab.methods.moe import Params, upcycle

HEAD = ("classifier",)


def test_pruning_magnitude_keeps_zeros_and_neurons_shrink_the_model(tiny_run: Path, tmp_path: Path, fast):
    before = load_artifact(tiny_run).model
    out = tmp_path / "pruned"
    record = export_model(tiny_run, out, dataclasses.replace(fast, prune="magnitude", prune_amount=0.5))

    pruned = record.pruned
    assert record.steps == ["pruned-magnitude+recovered"]
    assert pruned["linear_sparsity"] == pytest.approx(0.5, abs=0.01)
    assert len(pruned["recovery"]["losses"]) >= 1
    reloaded = load_artifact(out).model
    assert prune.linear_sparsity(reloaded, HEAD) == pytest.approx(pruned["linear_sparsity"])
    assert bool((reloaded.bert.pooler.dense.weight != 0).all())  # the one path to the head is kept
    assert pruned["parameters"]["before"] == pruned["parameters"]["after"]
    # recovery trained the surviving weights: they are no longer the originals
    name, layer = prune.prunable_linears(reloaded, HEAD)[0]
    original = dict(before.named_modules())[name].weight
    kept = layer.weight != 0
    assert not torch.equal(layer.weight[kept], original[kept])
    assert record.parity["after"]["metrics"]["accuracy"] >= 0.5

    out = tmp_path / "neurons"
    record = export_model(tiny_run, out, dataclasses.replace(fast, prune="neurons", prune_amount=0.5))

    assert record.pruned["intermediate_size"] == 32
    assert record.pruned["parameters"]["after"] < record.pruned["parameters"]["before"]
    assert json.loads((out / "config.json").read_text())["intermediate_size"] == 32
    plain = AutoModelForSequenceClassification.from_pretrained(out)
    assert plain.bert.encoder.layer[0].intermediate.dense.out_features == 32
    assert sum(p.numel() for p in plain.parameters()) == record.pruned["parameters"]["after"]
    assert record.parity["after"]["size_mb"] < record.parity["before"]["size_mb"]


def test_ffn_pruning_removes_dead_neurons_without_changing_outputs(tiny_backbone_dir: Path):
    """Neurons whose input weights and bias are zero contribute GELU(0)=0: removing them is exact."""
    model = AutoModelForSequenceClassification.from_pretrained(tiny_backbone_dir, num_labels=2).eval()
    with torch.no_grad():
        for layer in model.bert.encoder.layer:
            layer.intermediate.dense.weight[:16] = 0
            layer.intermediate.dense.bias[:16] = 0
        ids = torch.randint(5, 100, (3, 9))
        expected = model(input_ids=ids).logits
        assert prune.prune_ffn_neurons(model, 0.25) == 48
        torch.testing.assert_close(model(input_ids=ids).logits, expected)


def test_neuron_pruning_refuses_non_bert_layout(tiny_backbone_dir: Path):
    model = torch.nn.Module()
    model.base_model = torch.nn.Linear(2, 2)
    with pytest.raises(ExportError, match="--prune neurons: supports dense BERT-style encoders"):
        prune.prune_ffn_neurons(model, 0.5)
    moe = upcycle(
        AutoModelForSequenceClassification.from_pretrained(tiny_backbone_dir, num_labels=2), Params()
    )
    with pytest.raises(ExportError, match="an MoE model's FFNs are experts"):
        prune.prune_ffn_neurons(moe, 0.5)
