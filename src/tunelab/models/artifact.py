"""Saved model directories: a Hugging Face layout plus ``tunelab_run.json``; writer and reader together.

Layout: ``config.json`` (with id2label/label2id), ``model.safetensors``, tokenizer files, and
``tunelab_run.json`` (``models.run_info``). Variants, each read back here: an adapter artifact
(``models.adapter``), an int8 export (``models.int8``), and a model whose methods changed its module
structure (e.g. MoE), rebuilt from config.json plus the methods' ``rebuild`` and loaded strictly.
Directories are written to a temp dir and renamed, so a reader never sees a half-written model.

This layer knows no task: callers pass the task's model class and config overrides (the
``inference.artifact`` reader binds a directory to its task).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch
from safetensors.torch import load_file

from tunelab.errors import CheckpointError
from tunelab.io import atomic_dir
from tunelab.models import int8
from tunelab.models.adapter import ADAPTER_CONFIG, is_adapter_dir, is_peft_model, load_adapter_model
from tunelab.models.load import load_config, load_pretrained
from tunelab.models.run_info import AdapterInfo, RunInfo, write_run_info

if TYPE_CHECKING:
    from tunelab.models.protocols import SavesPretrained, TiesWeights

Rebuild = tuple[Callable[[torch.nn.Module, Any], torch.nn.Module], Any]  # (MethodSpec.rebuild, params)


def resolve_model_dir(path: Path) -> Path:
    """Accept a model dir, or a run dir whose ``best/`` holds the model."""
    for candidate in (path, path / "best"):
        if (candidate / "config.json").is_file() or (candidate / ADAPTER_CONFIG).is_file():
            return candidate
    if not path.exists():
        raise CheckpointError(f"{path}: no such directory")
    raise CheckpointError(
        f"{path}: not a tunelab or Hugging Face model directory (no config.json, no best/config.json); "
        "give a run's best/ directory or an exported model"
    )


def save_model(model: torch.nn.Module, tokenizer: Any, dest: Path, info: RunInfo) -> None:
    """Write model + tokenizer + ``tunelab_run.json`` atomically to ``dest``.

    A peft model is written as an adapter artifact over the run's base model (``info.config``).
    """
    if is_peft_model(model):
        if info.config is None:
            raise CheckpointError(f"{dest}: an adapter artifact needs the run config naming its base model")
        info = info.model_copy(update={"adapter": AdapterInfo(base_model=info.config.model.start)})
    with atomic_dir(dest) as tmp:
        cast("SavesPretrained", model).save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        write_run_info(tmp, info)


def model_skeleton(path: Path, model_class: Any, rebuilds: Sequence[Rebuild]) -> torch.nn.Module:
    """The saved model's structure with random weights: config.json plus the methods' rebuilds."""
    model: torch.nn.Module = model_class.from_config(load_config(path))
    for rebuild, params in rebuilds:
        model = rebuild(model, params)
    return model


def load_strict(path: Path, model: torch.nn.Module) -> torch.nn.Module:
    """Load every ``*.safetensors`` of ``path`` into ``model``; any missing or extra tensor is an error."""
    state: dict[str, torch.Tensor] = {}
    for file in sorted(path.glob("*.safetensors")):
        state.update(load_file(file))
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not match the rebuilt model: {one_line(exc)}") from None
    cast("TiesWeights", model).tie_weights()
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


def one_line(exc: BaseException) -> str:
    """An exception's message on one line (torch and transformers list shape mismatches over many)."""
    return " ".join(str(exc).split())[:500]


def load_exact(path: Path, model_class: Any) -> torch.nn.Module:
    """A plain saved model of ``model_class`` with every tensor from the file, or a ``CheckpointError``.

    transformers initialises missing tensors at random and drops unexpected ones with only a log
    report; for a saved model that means predictions that differ on every load, so any missing,
    unexpected or mismatched tensor is refused here (tied copies that ``save_pretrained`` leaves out
    are not reported missing).
    """
    try:
        model, loading = load_pretrained(model_class, path, output_loading_info=True)
    except (RuntimeError, ValueError) as exc:  # shapes that contradict config.json
        raise CheckpointError(f"{path}: weights do not match config.json: {one_line(exc)}") from None
    problems = [
        f"{kind.removesuffix('_keys')} {sorted(map(str, keys))[:5]}"
        for kind in ("missing_keys", "unexpected_keys", "mismatched_keys")
        if (keys := loading.get(kind))
    ]
    if problems:
        raise CheckpointError(
            f"{path}: weights do not match config.json ({'; '.join(problems)}); the directory is damaged "
            "or was written by other code: re-export or re-train it"
        )
    return cast(torch.nn.Module, model).eval()


def load_model(
    path: Path,
    info: RunInfo,
    model_class: Any,
    config: dict[str, Any],
    rebuilds: Sequence[Rebuild] = (),
) -> torch.nn.Module:
    """The model saved in ``path``: adapter artifact, int8 export, method-rebuilt or plain, in fp32.

    ``config`` holds the task's config overrides (used when a base model is loaded under an adapter);
    ``rebuilds`` are the run's structure-changing methods, applied to a skeleton before loading.
    """
    if not any(path.glob("*.safetensors")):
        raise CheckpointError(f"{path}: no .safetensors weights; tunelab only loads safetensors models")
    if is_adapter_dir(path):
        return load_adapter_model(path, info, model_class, info.labels, config)
    if info.export is not None and info.export.quantized:
        return int8.load_int8(path, model_skeleton(path, model_class, rebuilds))
    if rebuilds:
        return load_strict(path, model_skeleton(path, model_class, rebuilds))
    return load_exact(path, model_class)
