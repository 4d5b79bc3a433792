"""Skewed labels end to end: the shipped skewed example, cut for CI, against TF-IDF + logistic regression.

Rotten Tomatoes with 10% positives (``rotten-tomatoes-skewed``), 1,000 train rows (about 110
positive): the run must report the skew, select on macro-F1, weight the loss (``class_weights: auto``)
and reach at least the test macro-F1 of TF-IDF + LogisticRegression trained on the same rows (the
better of class_weight none and balanced, C chosen on the same dev rows).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score
from typer.testing import CliRunner

from tunelab.cli import app
from tunelab.config import load_config
from tunelab.training import resolve

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "skewed_rt.yaml"


def tfidf_macro_f1(overrides: list[str]) -> float:
    """Best test macro-F1 of TF-IDF + LR over class_weight none / balanced, C picked on dev macro-F1."""
    plan = resolve(load_config(EXAMPLE, overrides))
    data = plan.task.load_data(plan.cfg.data, plan.task_params, plan.cfg.train.seed)
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)
    x_train = vectorizer.fit_transform(data.train["text"])
    x_dev, x_test = vectorizer.transform(data.dev["text"]), vectorizer.transform(data.test["text"])
    scores = []
    for weight in (None, "balanced"):
        models = [
            LogisticRegression(C=c, class_weight=weight, max_iter=5000).fit(x_train, data.train["label"])
            for c in (0.1, 1.0, 10.0, 100.0)
        ]
        best = max(models, key=lambda m: f1_score(data.dev["label"], m.predict(x_dev), average="macro"))
        scores.append(f1_score(data.test["label"], best.predict(x_test), average="macro"))
    return float(max(scores))


@pytest.mark.slow
def test_skewed_example_reports_weights_and_clears_tfidf(tmp_path: Path):
    data = tmp_path / "rt-skewed"
    prepared = CliRunner().invoke(app, ["data", "prepare", "rotten-tomatoes-skewed", str(data)])
    assert prepared.exit_code == 0, prepared.output
    run = tmp_path / "run"
    overrides = [
        f"--data.train_file={data / 'train.csv'}",
        f"--data.test_file={data / 'test.csv'}",
        "--data.max_train_samples=1000",
        "--data.max_eval_samples=400",
        "--train.num_train_epochs=2",
        "--train.eval_steps=16",
        f"--train.output_dir={run}",
    ]
    bar = tfidf_macro_f1(overrides)
    trained = CliRunner().invoke(app, ["train", str(EXAMPLE), *overrides])
    assert trained.exit_code == 0, trained.output

    logged = " ".join(trained.output.split())  # rich wraps long lines
    assert "train labels: 2 labels, 1000 train rows: negative 890, positive 110" in logged
    assert "train labels are imbalanced: the largest has 8.1x the rows of the smallest" in logged
    assert "task.params.class_weights auto: balanced (train labels skewed)" in logged
    metrics = json.loads((run / "best" / "metrics.json").read_text())
    resolved = yaml.safe_load((run / "run_config.yaml").read_text())
    assert resolved["train"]["metric_for_best_model"] == "macro_f1"
    params = json.loads((run / "best" / "tunelab_run.json").read_text())["task_params"]
    assert params["class_weights"]["positive"] > 4 * params["class_weights"]["negative"]
    test = metrics["test"]
    assert test["macro_f1"] >= bar, (test["macro_f1"], bar)
    assert test["macro_f1"] > test["majority_baseline_macro_f1"] + 0.15, test
