"""The metric that selects best/: macro-F1 by default on skewed train labels, else the task's main one."""

from __future__ import annotations

import logging
from pathlib import Path

from toy_tasks import toy_rows, write_csv
from tunelab.tasks import TASKS
from tunelab.training import resolve
from tunelab.training.plan import default_selection_metric, report_choices


def _skewed_train(path: Path, positives: int) -> Path:
    """Toy rows with ``positives`` positive rows and every negative one (48 of 96)."""
    rows = toy_rows(96, seed=2)
    kept = [row for row in rows if row[1] == "negative"] + [row for row in rows if row[1] == "positive"][
        :positives
    ]
    return write_csv(path, kept)


def test_balanced_train_labels_keep_the_task_main_metric(make_config):
    plan = resolve(make_config())
    assert plan.label_balance is not None
    assert plan.label_balance.counts == {"negative": 48, "positive": 48}
    assert plan.selection_metric == "accuracy"
    assert plan.selection_reason == "the main metric of task 'classification'"


def test_imbalanced_train_labels_select_on_macro_f1(make_config, tmp_path):
    train = _skewed_train(tmp_path / "skewed.csv", positives=12)
    plan = resolve(make_config(data={"train_file": str(train)}))
    assert plan.label_balance is not None
    assert plan.label_balance.imbalanced
    assert plan.cfg.train.metric_for_best_model == "macro_f1"  # what run_config.yaml records
    assert plan.selection_reason is not None
    assert "imbalanced" in plan.selection_reason


def test_a_rare_label_alone_selects_on_macro_f1(make_config, tmp_path):
    rows = (
        [("good cue words", "positive")] * 6 + [("bad cue words", "negative")] * 6 + [("meh", "neutral")] * 3
    )
    train = write_csv(tmp_path / "rare.csv", rows)
    plan = resolve(make_config(data={"train_file": str(train), "dev_file": str(train)}))
    assert plan.label_balance is not None
    assert plan.label_balance.rare == ["neutral"]
    assert not plan.label_balance.imbalanced  # 6 / 3: the rare label is what decides
    assert plan.selection_metric == "macro_f1"


def test_a_metric_the_config_sets_is_kept_on_skewed_labels(make_config, tmp_path):
    train = _skewed_train(tmp_path / "skewed.csv", positives=12)
    plan = resolve(make_config(data={"train_file": str(train)}, train={"metric_for_best_model": "accuracy"}))
    assert plan.selection_metric == "accuracy"
    assert plan.selection_reason is None


def test_counts_are_those_of_the_train_split_the_run_trains_on(make_config):
    """No dev_file: dev is split off train first, so the counts are of the rows left for training."""
    cfg = make_config()
    cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={"dev_file": None, "dev_ratio": 0.25})})
    plan = resolve(cfg)
    assert plan.label_balance is not None
    assert sum(plan.label_balance.counts.values()) == 72


def test_tasks_without_one_label_per_row_and_missing_files_are_not_counted(make_config, tmp_path):
    cfg = make_config()
    missing = cfg.model_copy(
        update={"data": cfg.data.model_copy(update={"train_file": tmp_path / "none.csv"})}
    )
    plan = resolve(missing)
    assert plan.label_balance is None
    assert plan.selection_metric == "accuracy"
    qa = TASKS.get("qa")
    assert default_selection_metric(qa, None) == (qa.metric_names[0], "the main metric of task 'qa'")


def test_report_logs_counts_warnings_and_the_choice(make_config, tmp_path, caplog):
    train = _skewed_train(tmp_path / "skewed.csv", positives=4)
    plan = resolve(make_config(data={"train_file": str(train)}))
    with caplog.at_level(logging.INFO, logger="tunelab"):
        report_choices(plan)
    messages = [r.getMessage() for r in caplog.records]
    assert messages[0] == "train labels: 2 labels, 52 train rows: negative 48, positive 4"
    assert any("fewer than 5 train rows (positive 4)" in m for m in messages)
    assert any("12.0x the rows of the smallest" in m for m in messages)
    assert messages[-1].startswith("train.metric_for_best_model unset: selecting best/ on macro_f1")


def test_zero_shot_runs_have_no_train_labels_to_count(make_config):
    plan = resolve(make_config(data={"k_shot": 0}, task={"name": "embedding_classification", "params": {}}))
    assert plan.label_balance is None
    assert plan.selection_metric == "accuracy"
