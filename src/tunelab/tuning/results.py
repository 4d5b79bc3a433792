"""What a search found: every trial of the study, best first, as a table and as JSON."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import optuna
from rich.table import Table
from sqlalchemy.engine import make_url

from tunelab.tuning.space import Direction


def shown(url: str) -> str:
    """The storage URL without its password, for messages and results files."""
    return make_url(url).render_as_string(hide_password=True)


@dataclass(frozen=True)
class TrialRecord:
    """One trial as the results table and ``tune_results.json`` show it."""

    number: int
    state: str
    params: dict[str, Any]
    value: float | None  # a pruned trial's: its last reported value
    seconds: float | None
    run_dir: str | None
    note: str  # why it failed, or where it was pruned


@dataclass(frozen=True)
class TuneResult:
    """The study after this search: its trials best first, the best completed one, and a stop signal."""

    study_name: str
    storage: str
    metric: str
    direction: Direction
    trials: list[TrialRecord]
    best: TrialRecord | None
    signal_number: int | None = None


def _record(trial: optuna.trial.FrozenTrial) -> TrialRecord:
    start, end = trial.datetime_start, trial.datetime_complete
    note = trial.user_attrs.get("error", "")
    if trial.state == optuna.trial.TrialState.PRUNED:
        note = f"pruned at step {trial.last_step}"
    return TrialRecord(
        number=trial.number,
        state=trial.state.name,
        params=dict(trial.params),
        value=trial.value,
        seconds=(end - start).total_seconds() if start and end else None,
        run_dir=trial.user_attrs.get("run_dir"),
        note=note,
    )


def summarize(study: optuna.Study, metric: str, storage: str, signal_number: int | None = None) -> TuneResult:
    """Every trial of the study, completed ones best first, then pruned, then the rest."""
    maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
    direction: Direction = "maximize" if maximize else "minimize"
    rank = {"COMPLETE": 0, "PRUNED": 1}
    sign = -1.0 if direction == "maximize" else 1.0

    def order(r: TrialRecord) -> tuple[int, float, int]:
        return rank.get(r.state, 2), sign * r.value if r.value is not None else float("inf"), r.number

    trials = study.get_trials(deepcopy=False)
    done = any(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    return TuneResult(
        study_name=study.study_name,
        storage=storage,
        metric=metric,
        direction=direction,
        trials=sorted((_record(t) for t in trials), key=order),
        best=_record(study.best_trial) if done else None,
        signal_number=signal_number,
    )


def results_table(result: TuneResult) -> Table:
    """Trial, state, each param, the metric, wall time and a note; best first."""
    names = list(dict.fromkeys(key for r in result.trials for key in r.params))
    table = Table(title=f"study {result.study_name}: {result.metric} ({result.direction})")
    for column in ("trial", "state", *names, result.metric, "wall s", "note"):
        table.add_column(column, justify="left" if column in ("state", "note") else "right", overflow="fold")
    for r in result.trials:
        params = [_cell(r.params.get(name)) for name in names]
        seconds = f"{r.seconds:.0f}" if r.seconds is not None else "-"
        table.add_row(str(r.number), r.state, *params, _cell(r.value), seconds, r.note[:80])
    return table


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}" if isinstance(value, float) else str(value)
