"""Train a finished run again from its record and say how exactly it reproduces (``tunelab verify``).

A run's ``best/tunelab_run.json`` holds the resolved config, the seed and the manifest of what the
run read (data files and teacher models, features, tokenizer) and wrote (weights checksums). Verifying
refuses a run whose recorded data files or teachers are missing or changed, since a re-run would then
test other inputs; it trains the recorded config into a temporary directory, in as many processes as
the run had (through ``training.launch``, as ``tunelab train --nproc`` does), and compares the two
runs:

- ``bitwise``: the re-run's weights files are identical to the run's;
- ``numerical``: the weights differ, every dev and test metric within ``tolerance`` (absolute);
- ``differs``: a metric moved by more than ``tolerance`` or exists on one side only, or the run's
  weights files no longer match the checksums recorded when they were written.

Metrics are the numeric leaves of the ``dev`` and ``test`` sections of both runs' ``best/metrics.json``
(per-class scores and confusion counts included). Inputs whose hashes differ between the run and
the re-run (features, tokenizer, library versions...) are listed as the likely cause, not judged.
"""

from __future__ import annotations

import logging
import math
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from tunelab.config import dump_config, validate_config
from tunelab.errors import CheckpointError
from tunelab.io import read_json
from tunelab.models.artifact import resolve_model_dir
from tunelab.models.manifest import check_data_files
from tunelab.models.run_info import RunInfo, read_run_info, weights_digests
from tunelab.overrides import apply_override
from tunelab.training.launch import LaunchError, launch_workers
from tunelab.workflows import train_run

logger = logging.getLogger(__name__)
Level = Literal["bitwise", "numerical", "differs"]
METRICS_FILE = "metrics.json"
SPLITS = ("dev", "test")


@dataclass(frozen=True)
class Verdict:
    """How a re-run compares with the run: its level and what moved or changed on the way."""

    level: Level
    moved: list[str]  # "test.accuracy: 0.8125 -> 0.75", weights that do not match their record
    changed_inputs: list[str]  # manifest entries whose hash differs in the re-run
    compared: int  # number of metrics compared


def recorded_run(run_dir: Path) -> tuple[Path, RunInfo]:
    """The run's ``best/`` dir and its record; refuses a dir that cannot be re-run from its record."""
    model_dir = resolve_model_dir(run_dir)
    info = read_run_info(model_dir)
    if info is None or info.config is None:
        raise CheckpointError(f"{model_dir}: no tunelab_run.json with a config; only tunelab runs verify")
    if not info.data_files:
        raise CheckpointError(
            f"{model_dir}: the run record lists no data files (written before manifests); train it again"
        )
    if not (model_dir / METRICS_FILE).is_file():
        raise CheckpointError(f"{model_dir}: no {METRICS_FILE}: the run did not finish; finish it first")
    return model_dir, info


def rerun_config(info: RunInfo, dest: Path) -> Path:
    """The recorded config, training into ``dest/run`` from the verified data files, as a YAML file."""
    assert info.config is not None, "recorded_run refuses a record without a config"
    raw = info.config.model_dump(mode="json")
    apply_override(raw, "train.output_dir", str(dest / "run"))
    for key, recorded in info.data_files.items():  # absolute: the run may have named them relative
        apply_override(raw, key, recorded.path)
    path = dest / "run_config.yaml"
    path.write_text(dump_config(validate_config(raw)), encoding="utf-8")
    return path


def retrain(config: Path, processes: int, on_start: Callable[[int], None] | None) -> None:
    """Train ``config`` here (one process) or in ``processes`` launched workers, as the run was trained.

    The process count is an input of the numbers (each rank draws its own dropout masks, gradients
    are reduced across ranks), so a run trained with ``--nproc N`` only reproduces with N processes.
    """
    if processes == 1:
        train_run(config, on_start=on_start)
        return
    signum = launch_workers(["-m", "tunelab.cli", "train", str(config)], processes)
    if signum is not None:
        raise LaunchError(f"the re-run was stopped by signal {signum}; nothing was compared")


def flat_metrics(report: Mapping[str, Any]) -> dict[str, Any]:
    """The leaves of the dev and test sections as ``split.key.sub`` -> value (list items by index)."""

    def leaves(prefix: str, value: Any) -> Iterator[tuple[str, Any]]:
        if isinstance(value, Mapping):
            for key, sub in value.items():
                yield from leaves(f"{prefix}.{key}", sub)
        elif isinstance(value, list):
            for i, sub in enumerate(value):
                yield from leaves(f"{prefix}[{i}]", sub)
        else:
            yield prefix, value

    return dict(pair for split in SPLITS if split in report for pair in leaves(split, report[split]))


def moved_metrics(before: Mapping[str, Any], after: Mapping[str, Any], tolerance: float) -> list[str]:
    """Metrics that differ by more than ``tolerance`` (numbers) or at all (anything else), or exist once."""
    moved = []
    for key in sorted(before.keys() | after.keys()):
        old, new = before.get(key, "(missing)"), after.get(key, "(missing)")
        numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in (old, new))
        same = math.isclose(old, new, rel_tol=0, abs_tol=tolerance) if numbers else old == new
        if not same:
            moved.append(f"{key}: {old} -> {new}")
    return moved


def tampered_weights(model_dir: Path, info: RunInfo) -> list[str]:
    """Weights files of ``model_dir`` whose content no longer matches the record's checksum."""
    now = weights_digests(model_dir)
    return [
        f"{model_dir / name}: does not match its recorded sha256"
        for name in sorted(info.weights.keys() | now.keys())
        if info.weights.get(name) != now.get(name)
    ]


def changed_inputs(run: RunInfo, rerun: RunInfo) -> list[str]:
    """Manifest and provenance entries that differ between the run and its re-run."""
    pairs = {
        "tokenizer": (run.tokenizer_sha256, rerun.tokenizer_sha256),
        "chat template": (run.chat_template_sha256, rerun.chat_template_sha256),
        "git sha": (run.git_sha, rerun.git_sha),
        "hardware": (run.hardware, rerun.hardware),
    }
    for split in run.features_sha256.keys() | rerun.features_sha256.keys():
        pairs[f"{split} features"] = (run.features_sha256.get(split), rerun.features_sha256.get(split))
    for name in run.versions.keys() | rerun.versions.keys():
        pairs[f"{name} version"] = (run.versions.get(name), rerun.versions.get(name))
    return sorted(name for name, (old, new) in pairs.items() if old != new)


def verify_run(
    run_dir: Path, tolerance: float = 1e-6, on_start: Callable[[int], None] | None = None
) -> Verdict:
    """Check RUN_DIR's data files, train its recorded config again in a temp dir, compare the two runs.

    Raises ``DataError`` naming the file when a recorded data file is missing or changed, before any
    training. ``on_start`` is passed to ``train_run`` (the CLI's logging set-up) when the run had one
    process; launched workers set up their own.
    """
    model_dir, info = recorded_run(run_dir)
    check_data_files(info.data_files, "verify the run")
    with tempfile.TemporaryDirectory(prefix="tunelab-verify-") as tmp:
        config = rerun_config(info, Path(tmp))
        logger.info("re-running %s (seed %s, %d process(es)) in %s", run_dir, info.seed, info.processes, tmp)
        retrain(config, info.processes, on_start)
        rerun_dir = Path(tmp) / "run" / "best"
        rerun = read_run_info(rerun_dir)
        assert rerun is not None, "train_run writes a record into best/"
        after = flat_metrics(read_json(rerun_dir / METRICS_FILE))
    before = flat_metrics(read_json(model_dir / METRICS_FILE))
    moved = tampered_weights(model_dir, info) + moved_metrics(before, after, tolerance)
    identical = info.weights == rerun.weights  # unless tampered (then 'differs'), the run's files match these
    level: Level = "differs" if moved else "bitwise" if identical else "numerical"
    return Verdict(level, moved, changed_inputs(info, rerun), compared=len(before.keys() | after.keys()))
