"""A saved model bound to its task: what ``tunelab eval / predict / export / serve`` load.

``models.artifact`` reads the weights without knowing tasks; this reader adds what prediction needs
on top: the task spec named by ``tunelab_run.json``, its validated params, the label order, the input
columns, and the run's structure-changing methods (so e.g. an upcycled MoE model is rebuilt exactly).
A plain Hugging Face directory without ``tunelab_run.json`` loads when a task declares its
architecture (``TaskSpec.hf_architecture``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
from transformers import PretrainedConfig

from tunelab.data import Columns
from tunelab.errors import CheckpointError
from tunelab.methods import METHODS
from tunelab.models.artifact import Rebuild, load_model, resolve_model_dir
from tunelab.models.load import load_config, load_input_processor
from tunelab.models.run_info import RUN_FILE, RunInfo, read_run_info
from tunelab.tasks import TASKS
from tunelab.tasks.spec import TaskSpec, model_config_overrides


@dataclass
class Artifact:
    """A loaded model ready for prediction, with everything needed to preprocess its inputs."""

    path: Path
    model: torch.nn.Module
    tokenizer: Any
    task: TaskSpec
    task_params: Any
    labels: list[str]
    info: RunInfo

    @property
    def columns(self) -> Columns:
        """The input columns the model was trained on."""
        return self.info.columns


def _plain_hf_tasks() -> list[TaskSpec]:
    return [task for task in map(TASKS.get, TASKS.names()) if task.hf_architecture is not None]


def plain_hf_task(config: PretrainedConfig) -> TaskSpec | None:
    """The task that serves a Hugging Face directory of ``config`` without ``tunelab_run.json``, if any."""
    architectures = config.architectures or []
    for task in _plain_hf_tasks():
        if any(arch.endswith(str(task.hf_architecture)) for arch in architectures):
            return task
    return None


def _plain_hf_info(path: Path) -> RunInfo:
    """The run record of an HF directory saved without tunelab (task from its architecture, labels)."""
    config = load_config(path)
    task = plain_hf_task(config)
    if task is None:
        kinds = ", ".join(f"*{t.hf_architecture} ({t.name})" for t in _plain_hf_tasks())
        raise CheckpointError(
            f"{path}: a Hugging Face model ({config.architectures}) without {RUN_FILE} saying which task "
            f"it serves; a plain Hugging Face directory must be one of: {kinds}"
        )
    id2label = cast("dict[int, str]", config.id2label)  # transformers casts config.json's keys to int
    labels = [id2label[i] for i in sorted(id2label)]
    return RunInfo(task=task.name, labels=labels)


def method_rebuilds(path: Path, info: RunInfo) -> list[Rebuild]:
    """(rebuild, params) of the run's methods that change the module structure (e.g. moe)."""
    rebuilds: list[Rebuild] = []
    for method in info.config.methods if info.config is not None else []:
        try:
            spec = METHODS.get(method.name)
        except KeyError as exc:
            raise CheckpointError(f"{path}: {exc.args[0]}") from None
        if spec.rebuild is not None:
            rebuilds.append((spec.rebuild, spec.params.model_validate(method.params)))
    return rebuilds


def load_artifact(path: Path, device: str = "cpu") -> Artifact:
    """Load a saved model (a model dir or a run dir whose ``best/`` holds it) for prediction."""
    path = resolve_model_dir(path)
    info = read_run_info(path) or _plain_hf_info(path)
    try:
        task = TASKS.get(info.task)
    except KeyError as exc:
        raise CheckpointError(f"{path}: {exc.args[0]}") from None
    params = task.params.model_validate(info.task_params)
    overrides = model_config_overrides(task, params)
    model = load_model(path, info, task.model_class, overrides, method_rebuilds(path, info))
    return Artifact(
        path=path,
        model=model.to(device).eval(),
        tokenizer=load_input_processor(path),
        task=task,
        task_params=params,
        labels=list(info.labels),
        info=info,
    )
