"""Hyperparameter search: many ``tunelab train`` runs of one config, sampled and pruned by Optuna.

``space`` reads the ``--search`` file, ``search`` runs the study (each trial a real training run
into ``<train.output_dir>/trials/<n>/``) and ``results`` shows it. The study lives in an Optuna
storage (SQLite in the output dir by default; a server's SQLAlchemy URL lets several machines share
one search), so a search that crashed resumes with ``load_if_exists: true``. This package is the
only one that imports optuna.
"""

from __future__ import annotations

from tunelab.tuning.results import TrialRecord, TuneResult, results_table, summarize
from tunelab.tuning.search import Search, open_study, plan_search, run_search, tune
from tunelab.tuning.space import SearchSpace, load_space

__all__ = [
    "Search",
    "SearchSpace",
    "TrialRecord",
    "TuneResult",
    "load_space",
    "open_study",
    "plan_search",
    "results_table",
    "run_search",
    "summarize",
    "tune",
]
