"""MoE on the shipped real MiniLM: function-preserving upcycling, then a short train -> reload -> predict."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer
from typer.testing import CliRunner

from tunelab.cli import app
from tunelab.methods.moe import Params, upcycle
from tunelab.methods.moe.layer import moe_layers
from tunelab.models.load import resolve_model

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "sentiment_moe.yaml"


@pytest.mark.slow
def test_upcycled_minilm_equals_dense_minilm_at_init():
    path = resolve_model("minilm-l6")
    torch.manual_seed(0)
    dense = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2).eval()
    batch = AutoTokenizer.from_pretrained(path)(
        ["a gripping, beautifully acted film", "dull and far too long"], padding=True, return_tensors="pt"
    )
    with torch.no_grad():
        expected = dense(**batch).logits
        moe = upcycle(dense, Params(init="copy", n_shared_experts=0, n_routed_experts=4, top_k=2))
        got = moe(**batch).logits
    assert len(moe_layers(moe)) == 6
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)


@pytest.mark.slow
def test_example_moe_trains_reloads_and_predicts_on_real_minilm(tmp_path: Path, rt_overrides):
    runner = CliRunner()
    overrides = rt_overrides(320, 64, "--train.eval_steps=5", "--train.logging_steps=2")
    trained = runner.invoke(app, ["train", str(EXAMPLE), *overrides])
    assert trained.exit_code == 0, trained.output
    best = tmp_path / "run" / "best"
    metrics = json.loads((best / "metrics.json").read_text())
    assert len(metrics["router_dev"]["layers"]) == 6
    assert (best / "expert_load_dev.png").is_file()
    predicted = runner.invoke(app, ["predict", str(best), "--text", "a moving, wonderful film"])
    assert predicted.exit_code == 0, predicted.output
    assert json.loads(predicted.output.strip().splitlines()[-1])["label"] in {"positive", "negative"}
