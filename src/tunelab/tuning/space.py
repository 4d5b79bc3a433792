"""The ``--search`` file: config key paths -> Optuna distributions, and how the study runs.

Validated as a whole before any trial, with errors keyed as the file is written
(``search.params.train.lr.low``); the values themselves are checked against the run config by
``search.plan_search``, which knows the config.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import optuna
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from tunelab.errors import ConfigError, format_loc
from tunelab.io import read_yaml

Direction = Literal["maximize", "minimize"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Range(_Strict):
    """A numeric range; the validators run in field order (log, step, low, high) and see earlier fields."""

    log: bool = Field(default=False, description="Sample uniformly in log space (needs low > 0).")

    def bounds(self) -> dict[str, Any]:
        """The extreme values, by the key that sets them (checked against the config up front)."""
        return self.model_dump(include={"low", "high"})

    @field_validator("step", check_fields=False)
    @classmethod
    def _step_without_log(cls, step: float | None, info: ValidationInfo) -> float | None:
        if step is not None and info.data.get("log"):
            raise ValueError("step and log: true cannot be combined; drop one")
        return step

    @field_validator("low", check_fields=False)
    @classmethod
    def _positive_on_log(cls, low: float, info: ValidationInfo) -> float:
        if info.data.get("log") and low <= 0:
            raise ValueError("must be > 0 with log: true")
        return low

    @field_validator("high", check_fields=False)
    @classmethod
    def _not_below_low(cls, high: float, info: ValidationInfo) -> float:
        low = info.data.get("low")
        if low is not None and high < low:
            raise ValueError(f"must be >= low ({low})")
        return high


class FloatParam(_Range):
    """``{type: float, low, high, log, step}``: ``trial.suggest_float``."""

    type: Literal["float"]
    step: float | None = Field(default=None, gt=0, description="Sample only low + k * step.")
    low: float
    high: float

    def suggest(self, trial: optuna.Trial, name: str) -> float:
        """This trial's value."""
        return trial.suggest_float(name, self.low, self.high, step=self.step, log=self.log)


class IntParam(_Range):
    """``{type: int, low, high, log, step}``: ``trial.suggest_int``."""

    type: Literal["int"]
    step: int | None = Field(default=None, gt=0, description="Sample only low + k * step.")
    low: int
    high: int

    def suggest(self, trial: optuna.Trial, name: str) -> int:
        """This trial's value."""
        return trial.suggest_int(name, self.low, self.high, step=self.step or 1, log=self.log)


class CategoricalParam(_Strict):
    """``{type: categorical, choices}``: ``trial.suggest_categorical``."""

    type: Literal["categorical"]
    choices: list[str | int | float | bool | None] = Field(min_length=1)

    def suggest(self, trial: optuna.Trial, name: str) -> Any:
        """This trial's value."""
        return trial.suggest_categorical(name, self.choices)

    def bounds(self) -> dict[str, Any]:
        """Every choice, by the key that sets it (checked against the config up front)."""
        return {f"choices[{i}]": choice for i, choice in enumerate(self.choices)}


Param = Annotated[FloatParam | IntParam | CategoricalParam, Field(discriminator="type")]
PARAM_TYPES = ("float", "int", "categorical")


class SearchSpace(_Strict):
    """The ``--search`` file: what to vary, what to optimise, how to sample, prune and store."""

    params: dict[str, Param] = Field(
        min_length=1, description="Config key path, as in --key.path overrides -> its distribution."
    )
    metric: str | None = Field(
        default=None, description="Dev metric to optimise; null: the run's train.metric_for_best_model."
    )
    direction: Direction | None = Field(default=None, description="null: from the metric (loss: minimize).")
    trials: int = Field(default=20, gt=0, description="Finished trials the study holds at the end.")
    timeout_s: float | None = Field(default=None, gt=0, description="Start no trial after this many s.")
    sampler: Literal["tpe", "random"] = Field(default="tpe", description="Optuna sampler.")
    seed: int | None = Field(default=None, description="Sampler seed; null: the config's train.seed.")
    startup_trials: int = Field(
        default=5,
        ge=0,
        description="Trials TPE samples at random, and trials finished before pruning starts.",
    )
    pruner: Literal["median", "none"] = Field(default="median", description="Optuna pruner.")
    storage: str | None = Field(
        default=None, description="SQLAlchemy URL; null: sqlite:///<train.output_dir>/tune.db."
    )
    study_name: str | None = Field(default=None, description="null: the name of train.output_dir.")
    load_if_exists: bool = Field(default=False, description="Continue the stored study of that name.")

    @field_validator("storage")
    @classmethod
    def _sqlalchemy_url(cls, url: str | None) -> str | None:
        if url is not None:
            try:
                make_url(url)
            except ArgumentError:
                raise ValueError(
                    "not a SQLAlchemy URL, e.g. sqlite:///tune.db or postgresql://host/db"
                ) from None
        return url


def _space_problems(error: ValidationError) -> list[str]:
    """One ``search.key.path: message`` line per problem, keyed as the file is written."""
    lines = []
    for err in error.errors():
        loc = list(err["loc"])
        if loc[:1] == ["params"] and len(loc) > 2 and loc[2] in PARAM_TYPES:
            del loc[2]  # pydantic names the union member it tried; the file has no such level
        key = format_loc(("search", *loc))
        if err["type"] == "missing":
            lines.append(f"{key}: required key is missing")
        elif err["type"] == "extra_forbidden":
            lines.append(f"{key}: unknown key")
        else:
            why = err["msg"].removeprefix("Value error, ")
            lines.append(f"{key}: {why} (got {err['input']!r})")
    return lines


def load_space(path: Path) -> SearchSpace:
    """Validate a search-space file; all problems at once, keyed like ``search.params.train.lr.low``."""
    raw = read_yaml(path, "search space") or {}
    try:
        return SearchSpace.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{path}: invalid search space:\n" + "\n".join(_space_problems(exc))) from None
