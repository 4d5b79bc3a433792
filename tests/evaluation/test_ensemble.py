"""Ensembles: identical members equal one model, voting follows the majority, mismatched runs are refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from tunelab.cli import app
from tunelab.config import dump_config
from tunelab.errors import CheckpointError
from tunelab.evaluation.ensemble import combine_logits, ensemble_of
from tunelab.inference.artifact import load_artifact


@pytest.fixture
def tiny_best(make_config, tmp_path: Path) -> Path:
    cfg = make_config(train={"num_train_epochs": 2})
    config = tmp_path / "cfg.yaml"
    config.write_text(dump_config(cfg))
    result = CliRunner().invoke(app, ["train", str(config)])
    assert result.exit_code == 0, result.output
    return cfg.train.output_dir / "best"


@pytest.mark.parametrize("combine", ["logits", "probs", "vote"])
def test_ensemble_of_identical_runs_scores_like_one_run(tiny_best: Path, toy_data, combine):
    runner = CliRunner()
    one = runner.invoke(app, ["eval", str(tiny_best), "--data", str(toy_data["dev"])])
    many = runner.invoke(
        app,
        [
            "eval",
            str(tiny_best),
            str(tiny_best),
            str(tiny_best),
            "--data",
            str(toy_data["dev"]),
            "--combine",
            combine,
        ],
    )
    assert one.exit_code == 0, one.output
    assert many.exit_code == 0, many.output
    single, ensemble = json.loads(one.stdout), json.loads(many.stdout)
    assert ensemble["accuracy"] == single["accuracy"]
    if combine != "vote":  # the mean of identical logits/probabilities is the same distribution
        assert ensemble["loss"] == pytest.approx(single["loss"], abs=1e-5)


def test_vote_follows_the_majority_not_the_most_confident_member():
    stacked = torch.tensor(
        [
            [[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]],
            [[1.0, 0.5, 0.0], [0.0, 0.0, 1.0]],
            [[0.0, 0.0, 50.0], [1.0, 0.0, 0.0]],  # one very confident dissenter on row 0
        ]
    )
    voted = combine_logits(stacked, "vote")
    assert voted.argmax(-1).tolist()[0] == 0  # two of three members say class 0
    assert combine_logits(stacked, "logits").argmax(-1).tolist()[0] == 2  # the mean follows the dissenter
    torch.testing.assert_close(voted.exp().sum(-1), torch.ones(2))  # a distribution; row 1 ties 1-1-1
    probs = stacked.softmax(-1).mean(0)
    assert voted[1].argmax() == probs[1].argmax()  # ties go to the higher mean probability


def test_runs_with_different_labels_are_refused(tiny_best: Path, tmp_path: Path):
    other = tmp_path / "other"
    shutil.copytree(tiny_best, other)
    info = json.loads((other / "tunelab_run.json").read_text())
    info["labels"] = list(reversed(info["labels"]))
    (other / "tunelab_run.json").write_text(json.dumps(info))
    with pytest.raises(CheckpointError, match="differs from .* in labels"):
        ensemble_of([load_artifact(tiny_best), load_artifact(other)], "logits")
