"""MoE on the shipped real MiniLM: the default upcycling starts at the dense model, then trains as well.

The default layout (shared 3/4 + top-1 of 8 copies of the last 1/4, sigmoid gates x 2) must start within
the distance stated in ``methods/moe/upcycle.py`` of dense MiniLM on real sentences, and the example must
then match the dense example trained on the same rows with the same seed, with its routing balanced
well below where it starts.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer
from typer.testing import CliRunner

from tunelab.cli import app
from tunelab.methods.moe import Params, upcycle
from tunelab.methods.moe.layer import moe_layers
from tunelab.methods.moe.stats import active_params
from tunelab.models.load import resolve_model

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
# Reduced budget: 960 train rows (30 steps), 300 dev rows. Measured gap MoE - dense on it: -0.010 and
# -0.013 (two runs); the margin is one dev-set binomial std (~0.028 at p 0.6, n 300).
MARGIN = 0.028


@pytest.mark.slow
def test_default_upcycled_minilm_starts_at_dense_minilm():
    path = resolve_model("minilm-l6")
    torch.manual_seed(0)
    dense = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2).eval()
    batch = AutoTokenizer.from_pretrained(path)(
        ["a gripping, beautifully acted film", "dull and far too long"], padding=True, return_tensors="pt"
    )
    with torch.no_grad():
        expected = dense(**batch).logits
        moe = upcycle(copy.deepcopy(dense), Params())
        got = moe(**batch).logits
    assert len(moe_layers(moe)) == 6
    torch.testing.assert_close(got, expected, atol=2e-3, rtol=0)  # measured 3e-4 (upcycle.py)
    counts = active_params(moe)
    assert counts["active"] - counts["router"] == sum(p.numel() for p in dense.parameters())


def _train(runner: CliRunner, example: str, overrides: list[str], out: Path) -> dict:
    """Train ``example`` into ``out`` (a later --train.output_dir wins); the best model's metrics."""
    trained = runner.invoke(app, ["train", str(EXAMPLES / example), *overrides, f"--train.output_dir={out}"])
    assert trained.exit_code == 0, trained.output
    return dict(json.loads((out / "best" / "metrics.json").read_text()))


@pytest.mark.slow
def test_moe_example_matches_dense_with_balanced_routing_then_predicts(tmp_path: Path, rt_overrides):
    runner = CliRunner()
    overrides = rt_overrides(960, 300, "--train.eval_steps=15", "--train.logging_steps=5")
    dense = _train(runner, "sentiment.yaml", overrides, tmp_path / "dense")
    moe = _train(runner, "sentiment_moe.yaml", overrides, tmp_path / "moe")

    assert moe["dev"]["accuracy"] >= dense["dev"]["accuracy"] - MARGIN, (moe["dev"], dense["dev"])
    router = moe["router_dev"]
    assert len(router["layers"]) == 6
    # The target. Measured on this budget with the default 4 routed copies: worst layer 1.15;
    # with α1 and γ set to 0 it is 2.24 (layers 1.64-2.24); the full example ends at 1.17 (RESULTS.md).
    assert router["max_mean_load"] <= 1.3, router
    assert router["dead_experts"] == 0
    best = tmp_path / "moe" / "best"
    assert (best / "expert_load_dev.png").is_file()
    predicted = runner.invoke(app, ["predict", str(best), "--text", "a moving, wonderful film"])
    assert predicted.exit_code == 0, predicted.output
    assert json.loads(predicted.output.strip().splitlines()[-1])["label"] in {"positive", "negative"}
