"""tunelab tune: the search space is checked up front, trials are real runs, pruned, failed and resumed."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from typer.testing import CliRunner

from tunelab.cli import app
from tunelab.config import dump_config, load_config
from tunelab.errors import ConfigError
from tunelab.tuning import plan_search, results_table, run_search, tune

ROOT = Path(__file__).resolve().parents[1]
LR = {"type": "float", "low": 1e-3, "high": 1e-2, "log": True}
BATCH = {"type": "categorical", "choices": [4, 8]}


@pytest.fixture
def config_file(make_config, tmp_path: Path) -> Path:
    """A run of 8 optimizer steps that evaluates every 2; the search's base config."""
    cfg = make_config(train={"max_steps": 8, "eval_steps": 2, "save_steps": 1000, "warmup_steps": None})
    path = tmp_path / "cfg.yaml"
    path.write_text(dump_config(cfg))
    return path


def _space(tmp_path: Path, **fields: Any) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump({"params": {"train.lr": LR}, "pruner": "none", **fields}))
    return path


def _trials(out: Path, name: str = "run") -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{out / 'tune.db'}").trials


@pytest.mark.parametrize(
    ("params", "extra", "key"),
    [
        ({"train.lr": {**LR, "high": 1e-4}}, {}, r"search\.params\.train\.lr\.high: must be >= low"),
        ({"train.lr": {**LR, "low": 0.0}}, {}, r"search\.params\.train\.lr\.low: must be > 0 with log"),
        ({"train.lr": {"type": "float", "low": 1e-3}}, {}, r"search\.params\.train\.lr\.high: required"),
        ({"train.lr": {**LR, "step": 1e-3}}, {}, r"search\.params\.train\.lr\.step: step and log"),
        ({"train.lr": {"type": "uniform", "low": 0, "high": 1}}, {}, r"search\.params\.train\.lr: Input tag"),
        (
            {"train.batch_size": {"type": "int", "low": 1.5, "high": 4}},
            {},
            r"search\.params\.train\.batch_size\.low",
        ),
        (
            {"train.batch_size": {"type": "categorical", "choices": []}},
            {},
            r"train\.batch_size\.choices: List",
        ),
        ({"train.lr": LR}, {"trails": 3}, r"search\.trails: unknown key"),
        ({"train.lr": LR}, {"storage": "not a url"}, r"search\.storage: not a SQLAlchemy URL"),
        # each param's extremes are checked against the config itself, before any trial:
        (
            {"train.lr": {"type": "float", "low": 0.0, "high": 1e-2}},
            {},
            r"search\.params\.train\.lr\.low: 0\.0 makes the config invalid: train\.lr: Input should be",
        ),
        ({"train.learning_rate": LR}, {}, r"search\.params\.train\.learning_rate\.low: .*unknown key"),
        (
            {"train.batch_size": {"type": "categorical", "choices": [8, 0]}},
            {},
            r"search\.params\.train\.batch_size\.choices\[1\]: 0 makes the config invalid",
        ),
    ],
    ids=[
        "high-below-low",
        "log-from-zero",
        "high-missing",
        "step-with-log",
        "unknown-type",
        "fractional-int",
        "no-choices",
        "unknown-key",
        "bad-storage",
        "bound-refused-by-config",
        "unknown-config-key",
        "choice-refused-by-config",
    ],
)
def test_space_errors_name_the_key(config_file: Path, tmp_path: Path, params, extra, key: str):
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump({"params": params, **extra}))
    with pytest.raises(ConfigError, match=key):
        plan_search(config_file, space)


def test_method_params_are_checked_through_the_registry(make_config, tmp_path: Path):
    """``methods[0].params.r`` is a key path like any other; its bounds go through ``plan.resolve``."""
    config = tmp_path / "lora.yaml"
    config.write_text(dump_config(make_config(methods=[{"name": "lora"}])))
    space = tmp_path / "space.yaml"
    space.write_text(
        yaml.safe_dump({"params": {"methods[0].params.r": {"type": "int", "low": 0, "high": 8}}})
    )
    with pytest.raises(
        ConfigError, match=r"search\.params\.methods\[0\]\.params\.r\.low: 0 makes the config"
    ):
        plan_search(config, space)


def test_search_trains_each_trial_and_writes_the_results(config_file: Path, tmp_path: Path):
    """On dev loss (toy accuracy sits at chance for 8 steps): minimised, as the metric's direction says."""
    params = {"train.lr": LR, "train.batch_size": BATCH}
    space = _space(tmp_path, trials=3, sampler="random", metric="loss", params=params)
    result = CliRunner().invoke(app, ["tune", str(config_file), "--search", str(space)])
    assert result.exit_code == 0, result.output

    out = tmp_path / "run"
    trials = _trials(out)
    assert [t.state.name for t in trials] == ["COMPLETE"] * 3
    for t in trials:  # each trial is a real run of its sampled values, scored on dev by its best/ model
        run = load_config(out / "trials" / str(t.number) / "run_config.yaml")
        assert (run.train.lr, run.train.batch_size) == (t.params["train.lr"], t.params["train.batch_size"])
        metrics = json.loads((out / "trials" / str(t.number) / "best" / "metrics.json").read_text())
        assert metrics["dev"]["loss"] == t.value
    saved = json.loads((out / "tune_results.json").read_text())
    assert (saved["metric"], saved["direction"]) == ("loss", "minimize")
    values = [r["value"] for r in saved["trials"]]
    assert len(set(values)) == 3
    assert values == sorted(values)  # best first
    assert saved["best"]["value"] == min(t.value for t in trials)
    assert f"best: trial {saved['best']['number']}" in result.output

    best = load_config(out / "best.yaml")
    assert best.train.metric_for_best_model == "loss"
    assert best.train.lr == saved["best"]["params"]["train.lr"]
    assert best.train.batch_size == saved["best"]["params"]["train.batch_size"]
    assert best.train.output_dir == out / "best_run"  # retraining it leaves the search alone


def test_resumed_study_continues_numbering(config_file: Path, tmp_path: Path):
    tune(config_file, _space(tmp_path, trials=2))
    with pytest.raises(ConfigError, match=r"study 'run' already exists .*load_if_exists: true"):
        tune(config_file, _space(tmp_path, trials=3))

    result = tune(config_file, _space(tmp_path, trials=3, load_if_exists=True))

    assert sorted(r.number for r in result.trials) == [0, 1, 2]  # one more trial, up to the budget
    lrs = [t.params["train.lr"] for t in _trials(tmp_path / "run")]
    assert lrs[2] not in lrs[:2]  # the continued sampler does not redraw the first trials' values
    assert sorted(p.name for p in (tmp_path / "run" / "trials").iterdir()) == ["0", "1", "2"]
    assert tune(config_file, _space(tmp_path, trials=3, load_if_exists=True)).trials == result.trials


def test_pruned_trial_stops_at_its_first_evaluation(config_file: Path, tmp_path: Path):
    search = plan_search(config_file, _space(tmp_path, trials=2))
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.ThresholdPruner(lower=2.0))

    result = run_search(search, study)

    assert [t.state.name for t in study.trials] == ["PRUNED", "PRUNED"]
    assert list(study.trials[0].intermediate_values) == [2]  # reported at step 2, of 8
    run = tmp_path / "run" / "trials" / "0"
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert max(steps) == 2
    assert not (run / "best" / "metrics.json").exists()  # no test-set report for a pruned run
    assert result.best is None
    assert result.trials[0].note == "pruned at step 2"


def test_failing_trial_is_recorded_and_the_search_goes_on(config_file: Path, tmp_path: Path):
    """Each value alone is valid (checked up front); together they are refused, in that trial only."""
    params = {
        "train.warmup_steps": {"type": "int", "low": 1, "high": 2},
        "train.warmup_ratio": {"type": "categorical", "choices": [None, 0.1]},
    }
    search = plan_search(config_file, _space(tmp_path, trials=2, params=params))
    study = optuna.create_study(direction="maximize")
    study.enqueue_trial({"train.warmup_steps": 1, "train.warmup_ratio": 0.1})
    study.enqueue_trial({"train.warmup_steps": 1, "train.warmup_ratio": None})

    result = run_search(search, study)

    assert [t.state.name for t in study.trials] == ["FAIL", "COMPLETE"]
    assert "warmup_steps and warmup_ratio are exclusive" in study.trials[0].user_attrs["error"]
    assert not (tmp_path / "run" / "trials" / "0").exists()  # refused before anything was written
    assert result.best is not None
    assert result.best.number == 1
    assert [r.state for r in result.trials] == ["COMPLETE", "FAIL"]
    assert results_table(result).row_count == 2


class _SignalOnFirstReport(optuna.pruners.BasePruner):
    """SIGTERM to this process at the first evaluation, as a user stopping the search would."""

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        os.kill(os.getpid(), signal.SIGTERM)
        return False


def test_signal_stops_the_search_after_checkpointing_the_trial(config_file: Path, tmp_path: Path):
    search = plan_search(config_file, _space(tmp_path, trials=3))
    study = optuna.create_study(direction="maximize", pruner=_SignalOnFirstReport())

    result = run_search(search, study)

    assert result.signal_number == signal.SIGTERM
    assert [t.state.name for t in study.trials] == ["FAIL"]
    assert "interrupted by signal" in study.trials[0].user_attrs["error"]
    assert (tmp_path / "run" / "trials" / "0" / "checkpoints" / "step-000002").is_dir()


def test_search_refuses_trial_dirs_of_another_study(config_file: Path, tmp_path: Path):
    (tmp_path / "run" / "trials" / "0").mkdir(parents=True)
    with pytest.raises(ConfigError, match=r"holds trials 0 that study 'run'"):
        tune(config_file, _space(tmp_path, trials=1))


def test_shipped_search_space_validates_against_its_config():
    """examples/tune_<config>_space.yaml searches examples/<config>.yaml (skipped by the config test)."""
    spaces = sorted((ROOT / "examples").glob("tune_*_space.yaml"))
    assert spaces
    for space in spaces:
        config = ROOT / "examples" / f"{space.name.removeprefix('tune_').removesuffix('_space.yaml')}.yaml"
        search = plan_search(config, space)
        assert search.metric == load_config(config).train.metric_for_best_model
