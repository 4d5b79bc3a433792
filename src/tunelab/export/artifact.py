"""Saved models: a Hugging Face directory plus ``tunelab_run.json``; the writer and reader live together.

Layout: ``config.json`` (with id2label/label2id), ``model.safetensors``, tokenizer files, and
``tunelab_run.json`` (task, labels, input columns, resolved config, metrics, versions, seed, git sha).
Directories are written to a temp dir and renamed, so a reader never sees a half-written model.
"""

from __future__ import annotations

import importlib.metadata
import json
import platform
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tunelab import __version__
from tunelab.data import Columns
from tunelab.errors import CheckpointError
from tunelab.io import atomic_dir
from tunelab.tasks import TASKS
from tunelab.tasks.spec import TaskSpec

RUN_FILE = "tunelab_run.json"
ADAPTER_CONFIG = "adapter_config.json"  # peft's file: marks an adapter artifact (export/merge.py)
_VERSIONED = ("torch", "transformers", "tokenizers", "accelerate", "datasets", "safetensors", "scikit-learn")


def library_versions() -> dict[str, str]:
    """Versions of Python, tunelab and the libraries that shape a model's numbers."""
    versions = {"python": platform.python_version(), "tunelab": __version__}
    for name in _VERSIONED:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def git_sha() -> str | None:
    """Commit of the tunelab source tree when it runs from a git checkout, else None."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def save_artifact(model: torch.nn.Module, tokenizer: Any, dest: Path, info: Mapping[str, Any]) -> None:
    """Write model + tokenizer + ``tunelab_run.json`` (``info`` plus provenance) atomically to ``dest``."""
    with atomic_dir(dest) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        write_run_info(tmp, info)


def write_run_info(dest: Path, info: Mapping[str, Any]) -> None:
    """``tunelab_run.json`` = ``info`` plus provenance, into ``dest`` (a temp dir being filled)."""
    run_info = {**info, "versions": library_versions(), "git_sha": git_sha()}
    (dest / RUN_FILE).write_text(json.dumps(run_info, indent=2, default=str), encoding="utf-8")


@dataclass
class Artifact:
    """A loaded model ready for prediction, with everything needed to preprocess its inputs."""

    path: Path
    model: torch.nn.Module
    tokenizer: Any
    task: TaskSpec
    task_params: Any
    labels: list[str]
    columns: Columns
    info: dict[str, Any]


def resolve_artifact_dir(path: Path) -> Path:
    """Accept a model dir, or a run dir whose ``best/`` holds the model."""
    if (path / "config.json").is_file() or (path / ADAPTER_CONFIG).is_file():
        return path
    if (path / "best" / "config.json").is_file() or (path / "best" / ADAPTER_CONFIG).is_file():
        return path / "best"
    if not path.exists():
        raise CheckpointError(f"{path}: no such directory")
    raise CheckpointError(
        f"{path}: not a tunelab or Hugging Face model directory (no config.json, no best/config.json); "
        "give a run's best/ directory or an exported model"
    )


def _info_for_plain_hf(path: Path) -> dict[str, Any]:
    """Metadata for an HF classification dir saved without tunelab (labels from its config)."""
    config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    if not any(a.endswith("ForSequenceClassification") for a in config.get("architectures") or []):
        raise CheckpointError(
            f"{path}: a Hugging Face model but not a sequence classifier (architectures: "
            f"{config.get('architectures')}), and it has no {RUN_FILE} saying which task it serves"
        )
    id2label = config.get("id2label") or {}
    labels = [id2label[k] for k in sorted(id2label, key=int)]
    return {"task": "classification", "task_params": {}, "labels": labels, "columns": {"text": "text"}}


def _method_rebuilds(path: Path, info: Mapping[str, Any]) -> list[tuple[Any, Any]]:
    """(rebuild, params) of the run's methods that change the module structure (e.g. moe)."""
    from tunelab.methods import METHODS

    rebuilds = []
    for method in (info.get("config") or {}).get("methods") or []:
        try:
            spec = METHODS.get(method["name"])
        except KeyError as exc:
            raise CheckpointError(f"{path}: {exc.args[0]}") from None
        if spec.rebuild is not None:
            rebuilds.append((spec.rebuild, spec.params.model_validate(method.get("params") or {})))
    return rebuilds


def model_skeleton(path: Path, task: TaskSpec, rebuilds: list[tuple[Any, Any]]) -> torch.nn.Module:
    """The saved model's structure with random weights: config.json plus the methods' rebuilds."""
    from transformers import AutoConfig

    model = task.model_class.from_config(AutoConfig.from_pretrained(path, trust_remote_code=False))
    for rebuild, params in rebuilds:
        model = rebuild(model, params)
    return model


def _load_strict(path: Path, model: torch.nn.Module) -> torch.nn.Module:
    """Load every ``*.safetensors`` of ``path`` into ``model``; any missing or extra tensor is an error."""
    from safetensors.torch import load_file

    state: dict[str, torch.Tensor] = {}
    for file in sorted(path.glob("*.safetensors")):
        state.update(load_file(file))
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not match the rebuilt model: {exc}") from None
    model.tie_weights()
    # save_pretrained drops tied copies (e.g. an MLM decoder sharing the embeddings): a missing key is
    # fine only when it shares storage with a tensor that was loaded.
    params = dict(model.named_parameters(remove_duplicate=False))
    loaded = {params[key].data_ptr() for key in state if key in params}
    missing = [
        key for key in result.missing_keys if key not in params or params[key].data_ptr() not in loaded
    ]
    if missing or result.unexpected_keys:
        raise CheckpointError(
            f"{path}: weights do not match the rebuilt model: missing {missing[:5]}, "
            f"unexpected {result.unexpected_keys[:5]}"
        )
    return model.float()


def _load_model(path: Path, info: Mapping[str, Any], task: TaskSpec) -> torch.nn.Module:
    """A full HF model, an int8 export, an adapter artifact or a method-rebuilt model (e.g. moe).

    Each special reader lives beside its writer.
    """
    if (path / ADAPTER_CONFIG).is_file():
        from tunelab.export.merge import load_adapter_model

        return load_adapter_model(path, info, task)
    rebuilds = _method_rebuilds(path, info)
    if (info.get("export") or {}).get("quantized"):
        from tunelab.export.quantize import load_int8

        return load_int8(path, model_skeleton(path, task, rebuilds))
    if rebuilds:
        return _load_strict(path, model_skeleton(path, task, rebuilds))
    return task.model_class.from_pretrained(path, trust_remote_code=False, dtype=torch.float32)


def load_artifact(path: Path, device: str = "cpu") -> Artifact:
    """Load a saved model for prediction; never runs remote code."""
    from transformers import AutoTokenizer

    path = resolve_artifact_dir(path)
    run_file = path / RUN_FILE
    info = (
        json.loads(run_file.read_text(encoding="utf-8")) if run_file.is_file() else _info_for_plain_hf(path)
    )
    try:
        task = TASKS.get(info["task"])
    except KeyError as exc:
        raise CheckpointError(f"{path}: {exc.args[0]}") from None
    if not any(path.glob("*.safetensors")):
        raise CheckpointError(f"{path}: no .safetensors weights; tunelab only loads safetensors models")
    model = _load_model(path, info, task).to(device)
    model.eval()
    cols = info.get("columns") or {}
    return Artifact(
        path=path,
        model=model,
        tokenizer=AutoTokenizer.from_pretrained(path, trust_remote_code=False),
        task=task,
        task_params=task.params.model_validate(info.get("task_params") or {}),
        labels=list(info["labels"]),
        columns=Columns(
            text=cols.get("text", "text"), label=cols.get("label"), text_pair=cols.get("text_pair")
        ),
        info=info,
    )
