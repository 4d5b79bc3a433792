"""Every load of a model, tokenizer or config from a local directory: the only ``from_pretrained`` calls.

Rules that hold for each loader here: weights come from local directories only (the hub is off),
safetensors only, ``trust_remote_code`` off unless the run's config turned it on, and fp32 weights
(autocast decides the compute precision later). A directory that is not a model gets a
``CheckpointError`` naming it, not a traceback from deep inside transformers.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch
from safetensors.torch import load_file
from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForSeq2SeqLM,
    AutoTokenizer,
    PretrainedConfig,
)
from transformers import logging as hf_logging
from transformers.tokenization_utils_base import TOKENIZER_CONFIG_FILE, PreTrainedTokenizerBase
from transformers.utils import IMAGE_PROCESSOR_NAME as IMAGE_PROCESSOR_FILE

from tunelab.assets.models import MODELS, ModelAsset, cache_dir, shipped_source
from tunelab.errors import AssetError, CheckpointError, ConfigError
from tunelab.io import atomic_dir, read_json
from tunelab.models.architectures import DualEncoder

if TYPE_CHECKING:
    from tunelab.models.protocols import SwitchesAttention

__all__ = [
    "build_empty",
    "eager_attention",
    "label_maps",
    "load_by_architecture",
    "load_causal_lm",
    "load_config",
    "load_encoder",
    "load_input_processor",
    "load_pretrained",
    "load_saved",
    "load_seq2seq",
    "load_tokenizer",
    "refuse_unknown_settings",
    "resolve_model",
    "takes_text",
]


def label_maps(labels: Sequence[str]) -> tuple[dict[int, str], dict[str, int]]:
    """``id2label`` and ``label2id`` as transformers configs store them."""
    return dict(enumerate(labels)), {name: i for i, name in enumerate(labels)}


def _require_weights(path: Path) -> None:
    if not (path / "config.json").is_file():
        raise CheckpointError(f"{path}: no config.json; give a tunelab model dir or a Hugging Face model dir")
    if not any(path.glob("*.safetensors")):
        raise CheckpointError(f"{path}: no .safetensors weights; tunelab only loads safetensors models")


def _check_config_json(path: Path) -> None:
    """A damaged ``config.json`` is one CheckpointError naming file, line and column.

    Run before every transformers load of ``path``: transformers' own error is a long traceback (or,
    for tokenizers, an OSError that does not say which file is broken).
    """
    file = path / "config.json"
    if file.is_file() and not isinstance(read_json(file), dict):
        raise CheckpointError(f"{file}: expected a JSON object; the model directory is damaged")


def load_config(path: Path, trust_remote_code: bool = False) -> PretrainedConfig:
    """The directory's ``config.json`` as a transformers config; a damaged file is a clear error."""
    _check_config_json(path)
    try:
        # AutoConfig picks the config class from the file, so transformers types its result as Any.
        return cast(PretrainedConfig, AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code))
    except (OSError, ValueError, KeyError) as exc:
        raise CheckpointError(f"{path}: cannot read config.json ({type(exc).__name__}: {exc})") from None


def load_tokenizer(path: Path, trust_remote_code: bool = False) -> Any:
    """The directory's tokenizer (fast, Rust-backed where the files allow)."""
    _check_config_json(path)
    return AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)


def load_input_processor(path: Path, trust_remote_code: bool = False) -> Any:
    """What turns the model's raw inputs into tensors: its tokenizer, or an image model's image processor.

    Tasks receive it where they take a tokenizer (``preprocess``, ``collator``) and it is saved with
    the model (both kinds have ``save_pretrained``). A directory with an image processor's
    ``preprocessor_config.json`` and no tokenizer config holds an image model; every other one a text
    model.
    """
    if (path / IMAGE_PROCESSOR_FILE).is_file() and not (path / TOKENIZER_CONFIG_FILE).is_file():
        _check_config_json(path)
        return AutoImageProcessor.from_pretrained(path, trust_remote_code=trust_remote_code)
    return load_tokenizer(path, trust_remote_code)


def takes_text(processor: Any) -> bool:
    """Whether an input processor (``load_input_processor``) is a tokenizer, i.e. its model reads text."""
    return isinstance(processor, PreTrainedTokenizerBase)


def load_pretrained(
    model_class: Any,
    path: Path,
    labels: Sequence[str] = (),
    *,
    trust_remote_code: bool = False,
    output_loading_info: bool = False,
    ignore_mismatched_sizes: bool = False,
    **config: Any,
) -> Any:
    """``model_class`` from ``path`` with a head sized for ``labels`` (if any), in fp32.

    ``config`` overrides config.json values (e.g. a task's ``problem_type``) and is saved with the
    model; a key the architecture has no setting for is a ConfigError naming it, before any weight
    is read (``refuse_unknown_settings``). A freshly initialised head is what fine-tuning starts from,
    so transformers' "newly initialized" warning is silenced here. Label-free tasks (QA, language
    modelling) pass no labels and keep the class's own head size. A saved ``DualEncoder`` (a
    retrieval run) starts another class from its trained encoder (``_from_bi_encoder``). Either way,
    a class with ``init_missing`` then builds what the weights lacked from the loaded encoder (the
    embedding classifier's label-description head).
    """
    hf_config = load_config(path, trust_remote_code)
    if labels:
        id2label, label2id = label_maps(labels)
        config = {**config, "num_labels": len(labels), "id2label": id2label, "label2id": label2id}
    refuse_unknown_settings(model_class, hf_config, config, path)
    if model_class is not DualEncoder and DualEncoder.__name__ in (hf_config.architectures or []):
        model, info = _from_bi_encoder(model_class, path, hf_config, **config)
    else:
        model, info = _from_pretrained(
            model_class, path, trust_remote_code, ignore_mismatched_sizes, **config
        )
    init_missing = getattr(model_class, "init_missing", None)  # a head its class builds from the encoder
    if init_missing is not None:
        init_missing(model, info["missing_keys"], path)
    return (model, info) if output_loading_info else model


def _from_pretrained(
    model_class: Any, path: Path, trust_remote_code: bool, ignore_mismatched_sizes: bool, **config: Any
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The transformers load of ``model_class`` from ``path`` (config overrides applied), with its info.

    ``ignore_mismatched_sizes`` re-initialises a tensor whose saved shape differs (a grown head).
    """
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity(logging.ERROR)
    try:
        return cast(
            "tuple[torch.nn.Module, dict[str, Any]]",
            model_class.from_pretrained(
                path,
                dtype=torch.float32,
                trust_remote_code=trust_remote_code,
                output_loading_info=True,
                ignore_mismatched_sizes=ignore_mismatched_sizes,
                **config,
            ),
        )
    finally:
        hf_logging.set_verbosity(verbosity)


def _from_bi_encoder(
    model_class: Any, path: Path, hf_config: PretrainedConfig, **config: Any
) -> tuple[torch.nn.Module, dict[str, list[str]]]:
    """``model_class`` whose backbone is the shared encoder of the ``DualEncoder`` saved in ``path``.

    transformers would look for the backbone's tensors under the class's own prefix, find them under
    ``encoder.`` and silently leave every one at random; so the model is built from ``hf_config`` (the
    directory's config, which ``load_pretrained`` read) and its backbone takes every tower tensor (one
    it has no place for is an error; one the tower lacks, such as BERT's pooler, which the bi-encoder
    drops, stays fresh like the head). Returns the model in eval mode and transformers-style loading
    info.
    """
    prefix = f"{DualEncoder.base_model_prefix}."
    saved = {k: v for file in sorted(path.glob("*.safetensors")) for k, v in load_file(file).items()}
    tower = {k[len(prefix) :]: v for k, v in saved.items() if k.startswith(prefix)}
    hf_config.update(config)
    model = model_class.from_config(hf_config)  # fp32: tunelab never changes the default dtype
    backbone = model.base_model
    unexpected = sorted(tower.keys() - backbone.state_dict().keys())
    if unexpected:
        raise CheckpointError(
            f"{path}: the bi-encoder's tower does not fit {type(backbone).__name__}: {unexpected[:5]}"
        )
    backbone.load_state_dict(tower, strict=False)
    backbone_prefix = f"{model.base_model_prefix}." if backbone is not model else ""
    loaded = {backbone_prefix + key for key in tower}
    missing = sorted(key for key in model.state_dict() if key not in loaded)
    return model.eval(), {"missing_keys": missing, "unexpected_keys": [], "mismatched_keys": []}


def refuse_unknown_settings(
    model_class: Any, hf_config: PretrainedConfig, settings: Iterable[str], path: Path
) -> None:
    """A ConfigError naming every key of ``settings`` that ``path``'s architecture has no setting for.

    transformers sets a ``from_pretrained`` keyword on the config when the config has that attribute
    (``PretrainedConfig.from_dict``) and hands every other one to the model's ``__init__``, which fails
    with a TypeError deep in the load; the same attribute test on the directory's config (read without
    any weight, so ``tunelab validate`` runs it too) names the task's key instead. Keys in
    ``model_class.own_settings`` are ones a tunelab class puts on its config itself.
    """
    own = getattr(model_class, "own_settings", ())
    refused = [key for key in settings if key not in own and not hasattr(hf_config, key)]
    if refused:
        raise ConfigError(
            f"task.params: the task sets {refused} on the model, and {path}'s architecture "
            f"({type(hf_config).__name__}) has no such setting"
        )


@contextlib.contextmanager
def eager_attention(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """``model`` with eager attention inside the block, so ``output_attentions=True`` returns weights.

    transformers' sdpa and flash kernels never materialise the attention probabilities (they return
    none), and models load with the faster default; switching the loaded model here avoids a second
    load, and the previous kernel is restored on exit. Only the thread that runs the model may use it.

    Raises:
        CheckpointError: the model cannot switch its attention (not a transformers model).
    """
    previous = getattr(getattr(model, "config", None), "_attn_implementation", None)
    if previous is None or not hasattr(model, "set_attn_implementation"):
        raise CheckpointError(f"{type(model).__name__} is not a transformers model with attention weights")
    switching = cast("SwitchesAttention", model)
    switching.set_attn_implementation("eager")
    try:
        yield model
    finally:
        switching.set_attn_implementation(previous)


def build_empty(model_class: Any, path: Path, labels: Sequence[str] = (), **config: Any) -> torch.nn.Module:
    """``model_class`` as :func:`load_pretrained` builds it from ``path``, on the meta device: no weights.

    For memory estimates: the architecture, dtypes and head size of the real load, in milliseconds and
    without memory (meta tensors have shapes and dtypes but no storage).
    """
    hf_config = load_config(path)
    if labels:
        id2label, label2id = label_maps(labels)
        config = {**config, "num_labels": len(labels), "id2label": id2label, "label2id": label2id}
    hf_config.update(config)
    with torch.device("meta"):
        model: torch.nn.Module = model_class.from_config(hf_config, dtype=torch.float32)
    return model


def load_saved(model_class: Any, path: Path) -> torch.nn.Module:
    """A saved model of ``model_class`` exactly as stored (no new head, no config overrides), in eval mode.

    The one loader of plain HF directories: serving's causal LMs and encoders, back-translation's
    seq2seq models and distillation teachers come through here (tunelab artifacts load through
    ``models.artifact``, which also refuses missing or unexpected tensors).
    """
    _require_weights(path)
    _check_config_json(path)
    model: torch.nn.Module = model_class.from_pretrained(path, trust_remote_code=False, dtype=torch.float32)
    return model.eval()


def load_causal_lm(path: Path) -> tuple[torch.nn.Module, Any]:
    """(model in eval mode, tokenizer) of a causal LM directory."""
    return load_saved(AutoModelForCausalLM, path), load_tokenizer(path)


def load_encoder(path: Path) -> tuple[torch.nn.Module, Any]:
    """(bare encoder in eval mode, tokenizer) of any transformers directory, e.g. for embeddings."""
    return load_saved(AutoModel, path), load_tokenizer(path)


def load_seq2seq(path: Path) -> tuple[torch.nn.Module, Any]:
    """(model in eval mode, tokenizer) of an encoder-decoder directory (T5, BART, Marian...)."""
    _require_weights(path)
    config = load_config(path)
    if not config.is_encoder_decoder:
        raise CheckpointError(f"{path}: needs an encoder-decoder model (got {config.architectures})")
    return load_saved(AutoModelForSeq2SeqLM, path), load_tokenizer(path)


def load_by_architecture(path: Path) -> torch.nn.Module:
    """The transformers class that ``config.json``'s ``architectures`` names, in eval mode.

    For frozen companions such as distillation teachers: a full tunelab model directory is an HF
    directory underneath, so its architecture name says which class restores its head.
    """
    import transformers

    _require_weights(path)
    architectures = load_config(path).architectures
    arch = architectures[0] if architectures else None
    model_class = getattr(transformers, arch, None) if isinstance(arch, str) else None
    if model_class is None:
        raise CheckpointError(f"{path}: config.json names no transformers architecture (got {arch!r})")
    return load_saved(model_class, path)


def _convert_gguf(src: Path, gguf_file: str, dest: Path) -> None:
    """Write a GGUF model as a plain HF dir (fp32 safetensors + tokenizer + chat template), atomically.

    ``save_pretrained`` refuses GGUF-loaded models, so the dequantised weights are moved into a model
    built from the same config without its ``quantization_config``. Loading GGUF takes ~20 s; the
    converted dir reloads in well under a second, hence the cache.
    """
    tokenizer = AutoTokenizer.from_pretrained(src, gguf_file=gguf_file)
    loaded = AutoModelForCausalLM.from_pretrained(src, gguf_file=gguf_file, dtype=torch.float32)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = type(loaded)(config)
    model.load_state_dict(loaded.state_dict())
    model.generation_config = loaded.generation_config
    with atomic_dir(dest) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)


def _converted_model(name: str, asset: ModelAsset, src: Path) -> Path:
    """The cached HF dir of a GGUF asset, converted on first use (a complete dir has ``config.json``)."""
    dest = cache_dir() / "models" / name
    if not (dest / "config.json").is_file():
        if not (src / asset.gguf_file).is_file():
            raise AssetError(f"{src}: shipped model {name!r} is incomplete; reinstall {asset.package}")
        _convert_gguf(src, asset.gguf_file, dest)
    return dest


def resolve_model(name_or_path: str) -> Path:
    """Local directory for a shipped model name or an existing model directory."""
    if name_or_path in MODELS:
        asset, path = shipped_source(name_or_path)
        if asset.gguf_file:
            return _converted_model(name_or_path, asset, path)
        if not (path / "config.json").is_file():
            raise AssetError(
                f"{path}: shipped model {name_or_path!r} is incomplete; reinstall {asset.package}"
            )
        return path
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    raise AssetError(
        f"model {name_or_path!r} is neither a shipped model ({', '.join(sorted(MODELS))}) nor an existing "
        "local directory; hub downloads are disabled, so give a local path"
    )
