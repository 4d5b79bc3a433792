"""A search: trials of one config, each a ``workflows.train_run``, in an Optuna study.

Each trial's values are given to ``train_run`` as ``--key.path`` overrides of the config, with
``train.output_dir`` set to ``<train.output_dir>/trials/<n>/``, so a trial is validated, trained,
saved and reported exactly as ``tunelab train`` would do it. The pruner gets the dev metric at every
evaluation through ``train_run``'s ``on_eval``, and a pruned run stops at that evaluation.
"""

from __future__ import annotations

import copy
import json
import logging
import signal
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import optuna
import yaml

from tunelab.config import load_raw, validate_config
from tunelab.errors import ConfigError, TunelabError
from tunelab.io import atomic_write
from tunelab.overrides import apply_override
from tunelab.training import resolve
from tunelab.tuning.results import TuneResult, shown, summarize
from tunelab.tuning.space import Direction, SearchSpace, load_space
from tunelab.workflows import train_run

logger = logging.getLogger(__name__)


def with_values(raw: Mapping[str, Any], values: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of the raw config with ``values`` set at their key paths."""
    out = copy.deepcopy(dict(raw))
    for key, value in values.items():
        apply_override(out, key, value)
    return out


def as_overrides(values: Mapping[str, Any]) -> list[str]:
    """``--key.path=value`` arguments; JSON is YAML, so each value parses back to itself."""
    return [f"--{key}={json.dumps(value)}" for key, value in values.items()]


def _check_bounds(raw: Mapping[str, Any], space: SearchSpace) -> None:
    """Each param's extremes and choices must give a valid run, so a typo fails before any trial.

    Values are checked one param at a time; a combination the config refuses (e.g. both warmups)
    can only show in its trial, which then fails and the search goes on.
    """
    problems = []
    for key, param in space.params.items():
        for bound, value in param.bounds().items():
            try:
                resolve(validate_config(with_values(raw, {key: value})), count_labels=False)
            except ConfigError as exc:
                why = str(exc).removeprefix("invalid config:\n").replace("\n", "; ")
                problems.append(f"search.params.{key}.{bound}: {value!r} makes the config invalid: {why}")
    if problems:
        raise ConfigError("invalid search space:\n" + "\n".join(problems))


@dataclass(frozen=True)
class Search:
    """A validated search: the base config, its space, and what the trials optimise and where."""

    config: Path
    overrides: tuple[str, ...]  # the command line's, and the metric pinned: every trial's base
    raw: dict[str, Any]  # the config file with those overrides applied
    space: SearchSpace
    out: Path
    metric: str
    direction: Direction
    storage: str
    study_name: str
    seed: int


def plan_search(config: Path, space_file: Path, overrides: Sequence[str] = ()) -> Search:
    """Validate the config, the space and each param's bounds against the config; load no model."""
    space = load_space(space_file)
    raw = load_raw(config, list(overrides))
    if space.metric is not None:
        apply_override(raw, "train.metric_for_best_model", space.metric)
    plan = resolve(validate_config(raw))
    if plan.cfg.data.k_shot == 0:
        raise ConfigError("data.k_shot: 0 trains nothing, so there is nothing to tune; drop it")
    metric = plan.selection_metric
    pin = {"train.metric_for_best_model": metric}  # one metric selects best/ in every trial
    raw = with_values(raw, pin)
    _check_bounds(raw, space)
    out = plan.cfg.train.output_dir
    return Search(
        config=config,
        overrides=(*overrides, *as_overrides(pin)),
        raw=raw,
        space=space,
        out=out,
        metric=metric,
        direction=space.direction or ("maximize" if plan.higher_is_better else "minimize"),
        storage=space.storage or f"sqlite:///{out / 'tune.db'}",
        study_name=space.study_name or out.resolve().name,
        seed=plan.cfg.train.seed if space.seed is None else space.seed,
    )


def _sampler(space: SearchSpace, seed: int) -> optuna.samplers.BaseSampler:
    if space.sampler == "tpe":
        return optuna.samplers.TPESampler(n_startup_trials=space.startup_trials, seed=seed)
    return optuna.samplers.RandomSampler(seed=seed)


def open_study(search: Search) -> optuna.Study:
    """Create the study in its storage (or load it: ``load_if_exists``), with the sampler and pruner.

    A continued study's sampler is seeded with the seed plus its trial count: seeded as at the
    start, it would draw the first trials' values again.
    """
    space = search.space
    pruner: optuna.pruners.BasePruner = (
        optuna.pruners.MedianPruner(n_startup_trials=space.startup_trials)
        if space.pruner == "median"
        else optuna.pruners.NopPruner()
    )
    search.out.mkdir(parents=True, exist_ok=True)
    try:
        study = optuna.create_study(
            storage=search.storage,
            sampler=_sampler(space, search.seed),
            pruner=pruner,
            study_name=search.study_name,
            direction=search.direction,
            load_if_exists=space.load_if_exists,
        )
    except optuna.exceptions.DuplicatedStudyError:
        raise ConfigError(
            f"search.study_name: study {search.study_name!r} already exists in {shown(search.storage)}; "
            "set load_if_exists: true to continue it, or choose another study_name"
        ) from None
    if study.trials:
        study.sampler = _sampler(space, search.seed + len(study.trials))
    return study


def _check_trial_dirs(search: Search, study: optuna.Study) -> None:
    """Refuse trial dirs this study did not make: a new trial would land on an old run."""
    root = search.out / "trials"
    known = {str(t.number) for t in study.trials}
    stale = sorted(p.name for p in root.iterdir() if p.name not in known) if root.is_dir() else []
    if stale:
        raise ConfigError(
            f"{root} holds trials {', '.join(stale)} that study {search.study_name!r} in "
            f"{shown(search.storage)} does not have; move them away, choose another train.output_dir, "
            "or set storage / study_name to the search that made them"
        )


def _run_trial(search: Search, trial: optuna.Trial, study: optuna.Study, signals: list[int]) -> float:
    """One ``train_run`` with this trial's values; its best dev metric is the trial's value."""
    params = {key: param.suggest(trial, key) for key, param in search.space.params.items()}
    run_dir = search.out / "trials" / str(trial.number)
    trial.set_user_attr("run_dir", str(run_dir))
    logger.info("trial %d: %s -> %s", trial.number, params, run_dir)
    overrides = [*search.overrides, *as_overrides({**params, "train.output_dir": str(run_dir)})]

    def on_eval(metrics: Mapping[str, Any], step: int) -> bool:
        trial.report(float(metrics[search.metric]), step)
        return trial.should_prune()

    result = train_run(search.config, overrides, on_eval=on_eval)
    if result.stopped == "pruned":
        raise optuna.TrialPruned(f"pruned at step {result.step}")
    if result.stopped == "interrupted":
        signals.append(result.signal_number or signal.SIGINT)
        study.stop()
        raise TunelabError(f"interrupted by signal {signals[-1]} at step {result.step}; the search stops")
    if result.best_metric is None:
        raise TunelabError(f"{run_dir}: the run evaluated nothing, so it has no {search.metric}")
    return result.best_metric


def _objective(search: Search, study: optuna.Study, signals: list[int]) -> Callable[[optuna.Trial], float]:
    """The objective Optuna calls: a trial's error is recorded on the trial, then raised for its FAIL."""

    def objective(trial: optuna.Trial) -> float:
        try:
            return _run_trial(search, trial, study, signals)
        except optuna.TrialPruned:
            raise
        except Exception as exc:
            trial.set_user_attr("error", f"{type(exc).__name__}: {exc}")
            raise

    return objective


def write_results(search: Search, result: TuneResult) -> None:
    """``tune_results.json``, and ``best.yaml``: the config with the best values, training into best_run/."""
    atomic_write(search.out / "tune_results.json", json.dumps(asdict(result), indent=2) + "\n")
    if result.best is not None:
        best = with_values(
            search.raw, {**result.best.params, "train.output_dir": str(search.out / "best_run")}
        )
        atomic_write(search.out / "best.yaml", yaml.safe_dump(best, sort_keys=False))


def run_search(search: Search, study: optuna.Study) -> TuneResult:
    """Run trials until the study holds ``trials`` finished ones (or the timeout), then write the results.

    A trial that raises is FAIL (optuna logs its traceback) and the search goes on: a sampled
    combination the config refuses, or a run that breaks, says nothing about the other trials. A
    signal stops the running trial at its next step (checkpointed) and the search with it.
    """
    _check_trial_dirs(search, study)
    finished = sum(t.state.is_finished() for t in study.get_trials(deepcopy=False))
    signals: list[int] = []
    if search.space.trials > finished:
        study.optimize(
            _objective(search, study, signals),
            n_trials=search.space.trials - finished,
            timeout=search.space.timeout_s,
            catch=(Exception,),
            gc_after_trial=True,
        )
    result = summarize(study, search.metric, shown(search.storage), signals[0] if signals else None)
    write_results(search, result)
    return result


def tune(config: Path, space_file: Path, overrides: Sequence[str] = ()) -> TuneResult:
    """``tunelab tune``: validate everything, open (or continue) the study, run it, write the results."""
    search = plan_search(config, space_file, overrides)
    return run_search(search, open_study(search))
