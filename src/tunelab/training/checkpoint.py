"""Resumable checkpoints: accelerate's state (model, optimizer, scheduler, scaler, RNG) + loop state.

Each checkpoint is written into a hidden temp directory and renamed into place only when complete, so
a crash mid-write leaves the previous checkpoint as the newest loadable one. accelerate stores
weights with safetensors and loads the rest with ``weights_only=True``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from safetensors.torch import load_file, save_file

from tunelab.errors import CheckpointError
from tunelab.io import atomic_write, publish_dir
from tunelab.methods.spec import RunState

logger = logging.getLogger(__name__)
STATE_FILE = "trainer_state.json"
_NAME = re.compile(r"^step-(\d+)$")
# Keys that may differ between the original run and its resume without changing the training math:
# where the run lives (``train.output_dir``: a run moved to another directory or disk still resumes),
# how often it logs and saves, the evaluation batch size, and the test file scored after training.
# Input paths (``model.name_or_path``, the data files) stay compared; the content of the data files and
# teachers is compared too (``TrainerState.inputs``), so the same path holding other rows is refused.
RESUMABLE_CHANGES = frozenset(
    {
        "train.output_dir",
        "train.logging_steps",
        "train.save_steps",
        "train.save_total_limit",
        "train.eval_batch_size",
        "data.test_file",
    }
)
_BATCH = "train.batch_size"  # may change with the process count at the same global batch


@dataclass
class TrainerState:
    """Loop position and model-selection state; together with accelerate's state it defines a resume."""

    step: int = 0
    epoch: int = 0
    step_in_epoch: int = 0  # optimizer steps already taken in ``epoch``
    best_metric: float | None = None
    best_step: int | None = None
    evals_without_improvement: int = 0
    config: dict[str, Any] = dataclasses.field(default_factory=dict)
    log_window: dict[str, Any] = dataclasses.field(default_factory=dict)  # what the next log averages
    world_size: int | None = None  # processes that wrote it (None: a checkpoint older than this field)
    # sha256 of each data file and teacher the run read, by config key (``models.manifest.data_files``);
    # empty in a checkpoint older than this field, which is then resumed unchecked
    inputs: dict[str, str] = dataclasses.field(default_factory=dict)


def checkpoint_dir(output_dir: Path, step: int) -> Path:
    """``output_dir/checkpoints/step-000123``."""
    return output_dir / "checkpoints" / f"step-{step:06d}"


def list_checkpoints(output_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest first (temp dirs of interrupted writes are hidden and ignored)."""
    root = output_dir / "checkpoints"
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if _NAME.match(p.name) and (p / STATE_FILE).is_file()]
    return sorted(found, key=lambda p: int(_NAME.match(p.name).group(1)))  # type: ignore[union-attr]


def latest_checkpoint(output_dir: Path) -> Path | None:
    """The newest complete checkpoint, or None."""
    found = list_checkpoints(output_dir)
    return found[-1] if found else None


def _run_state_file(path: Path, key: str) -> Path:
    return path / f"run_state-{key}.safetensors"


def save_checkpoint(
    accelerator: Accelerator,
    output_dir: Path,
    state: TrainerState,
    keep: int,
    run_states: Mapping[str, RunState] | None = None,
    model: torch.nn.Module | None = None,
) -> Path:
    """Write a checkpoint for ``state.step`` atomically (all ranks call this) and prune old ones.

    ``run_states`` (method companions keyed by name) are saved from the unwrapped ``model``; their
    state is identical on every rank (it derives from all-reduced gradients), so rank 0 writes it.
    """
    dest = checkpoint_dir(output_dir, state.step)
    tmp = dest.with_name(f".{dest.name}.tmp")  # same name on every rank: they all write into it
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp), safe_serialization=True)
    if accelerator.is_main_process:
        for key, companion in (run_states or {}).items():
            assert model is not None, "run states are read from the unwrapped model"
            save_file(companion.run_state(model), str(_run_state_file(tmp, key)))
        atomic_write(tmp / STATE_FILE, json.dumps(dataclasses.asdict(state), indent=2))
        publish_dir(tmp, dest)
        for old in list_checkpoints(output_dir)[:-keep]:
            shutil.rmtree(old)
    accelerator.wait_for_everyone()
    return dest


def read_state(path: Path) -> TrainerState:
    """The loop state stored in a checkpoint directory."""
    state_file = path / STATE_FILE
    if not state_file.is_file():
        raise CheckpointError(f"{path}: not a complete tunelab checkpoint (no {STATE_FILE})")
    return TrainerState(**json.loads(state_file.read_text(encoding="utf-8")))


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        out: dict[str, Any] = {}
        for key, value in tree.items():
            out.update(_flatten(value, f"{prefix}.{key}" if prefix else key))
        return out
    return {prefix: tree}


def config_differences(
    saved: dict[str, Any], current: dict[str, Any], world_sizes: tuple[int | None, int] = (1, 1)
) -> list[str]:
    """Dotted keys whose values differ and would make the resumed run differ from the original.

    ``train.batch_size`` may change with the process count (``world_sizes``: saved, current) when
    the global batch, processes x batch_size, stays the same: each optimizer step then sees the same
    rows (``data.batching.shard_batches`` splits each global batch across the processes).
    """
    old, new = _flatten(saved), _flatten(current)
    diffs = {k for k in old.keys() | new.keys() if old.get(k) != new.get(k) and k not in RESUMABLE_CHANGES}
    saved_world, world = world_sizes
    if saved_world is not None and saved_world * old.get(_BATCH, 0) == world * new.get(_BATCH, 0):
        diffs.discard(_BATCH)
    return sorted(diffs)


def check_resumable(
    path: Path, config: dict[str, Any], world_size: int = 1, inputs: Mapping[str, str] | None = None
) -> TrainerState:
    """The loop state of ``path`` if ``config`` may continue it, else a ``CheckpointError`` naming the keys.

    Cheap (one JSON file), so a caller checks before it loads data or weights or writes anything.
    ``world_size`` is the resuming run's process count. ``inputs`` (sha256 by config key of the files
    and models this run read) must equal the checkpoint's for every key it recorded: a resume on other
    rows or another teacher would continue a run that never existed. A key it did not record is not
    compared: an older checkpoint's (the start model was recorded later), or one the config adds
    (then the config differs, refused below).
    """
    state = read_state(path)
    if inputs is not None and state.inputs:
        keys = state.inputs.keys() - RESUMABLE_CHANGES  # the test file is scored after
        changed = sorted(key for key in keys if state.inputs.get(key) != inputs.get(key))
        if changed:
            raise CheckpointError(
                f"{path}: cannot resume, the content of {', '.join(changed)} changed since the checkpoint "
                "(sha256 differs); restore the original files or start a new run (another train.output_dir)"
            )
    diffs = config_differences(state.config, config, (state.world_size, world_size))
    if diffs:
        hint = ""
        if _BATCH in diffs and state.world_size not in (None, world_size):
            hint = f" (saved by {state.world_size} processes: keep processes x batch_size equal)"
        raise CheckpointError(
            f"{path}: cannot resume, the config changed in: {', '.join(diffs)}{hint}; "
            "restore those values or start a new run (another train.output_dir)"
        )
    return state


def load_checkpoint(
    accelerator: Accelerator,
    path: Path,
    config: dict[str, Any],
    run_states: Mapping[str, RunState] | None = None,
    model: torch.nn.Module | None = None,
    inputs: Mapping[str, str] | None = None,
) -> TrainerState:
    """Restore accelerate's state and the methods' run states from ``path``; return the loop state.

    A config that differs from the checkpoint's outside ``RESUMABLE_CHANGES``, or ``inputs`` whose
    content differs (``check_resumable``), is refused with a ``CheckpointError`` before anything is
    restored: the resumed run would not continue the original.
    ``run_states`` are restored into the unwrapped ``model``, which they require. Another process
    count may resume at the same global batch (``config_differences``).
    """
    state = check_resumable(path, config, accelerator.num_processes, inputs)
    if state.world_size not in (None, accelerator.num_processes):
        # accelerate restores rank i's RNG from random_states_i.pkl and silently skips ranks without one.
        logger.warning(
            "%s was saved by %d process(es), resumed by %d: weights, optimizer, schedule and data order "
            "continue exactly; each rank's RNG (dropout, augmentation) does not",
            path,
            state.world_size,
            accelerator.num_processes,
        )
    accelerator.load_state(str(path))
    for key, companion in (run_states or {}).items():
        file = _run_state_file(path, key)
        if not file.is_file():
            raise CheckpointError(f"{path}: {file.name} is missing; the checkpoint predates method {key!r}")
        assert model is not None, "run states are restored into the unwrapped model"
        companion.restore(model, load_file(str(file)))
    return state
