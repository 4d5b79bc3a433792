"""Content hashes of what a run read: its data files, its teachers, its preprocessed features, its tokenizer.

They go into the run record (``models.run_info``) so that ``tunelab verify`` can refuse a run whose
inputs changed, and say which input explains a run that no longer reproduces. The weights checksums
are taken where the record is written (``run_info.write_run_info``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from transformers.tokenization_utils_base import (
    ADDED_TOKENS_FILE,
    SPECIAL_TOKENS_MAP_FILE,
    TOKENIZER_CONFIG_FILE,
)
from transformers.utils.hub import CHAT_TEMPLATE_FILE

from tunelab.config import DataConfig
from tunelab.errors import DataError
from tunelab.io import sha256_file
from tunelab.models.artifact import resolve_model_dir
from tunelab.models.load import takes_text
from tunelab.models.run_info import DataFile, FileDigest, file_digest, weight_files

_ROWS_PER_BATCH = 1000


def data_files(
    cfg: DataConfig, method_params: Sequence[BaseModel] = (), start: Path | None = None
) -> dict[str, DataFile]:
    """sha256 and size of every file the run reads, keyed by its config key path.

    The files the ``data:`` section names, every path among the validated params of ``methods[i]``
    (e.g. ``self_train``'s unlabelled file), nested options and lists included, and the pretrained
    ``start`` model (``model.name_or_path``: other start weights train another model, and a LoRA
    checkpoint holds only its adapter). A path naming a directory is a model the run reads (a
    teacher; a run dir stands for its ``best/``), recorded as that model directory with
    :func:`content_digest`'s one hash of its config and weights.
    """
    paths = {
        "model.name_or_path": start,
        "data.train_file": cfg.train_file,
        "data.dev_file": cfg.dev_file,
        "data.test_file": cfg.test_file,
        "data.augment.synonyms_file": cfg.augment.synonyms_file if cfg.augment is not None else None,
    }
    for i, params in enumerate(method_params):
        paths |= dict(_paths(params, f"methods[{i}].params"))
    out = {}
    for key, path in paths.items():
        if path is not None:
            path = path.expanduser()
            path = resolve_model_dir(path) if path.is_dir() else path
            digest = content_digest(path)
            out[key] = DataFile(path=str(path.resolve()), sha256=digest.sha256, size=digest.size)
    return out


def content_digest(path: Path) -> FileDigest:
    """A file's sha256 and size; a model directory's: one hash over its config and weights files.

    The directory's hash covers each of ``config.json`` and its weights files (``run_info.weight_files``)
    by name and sha256, as the tokenizer's files are hashed, and its size is theirs summed: what makes
    a model read whole (a teacher) give other logits. Its tokenizer files are left out (a teacher reads
    the run's own token ids).
    """
    if not path.is_dir():
        return file_digest(path)
    files = [file for file in (path / "config.json",) if file.is_file()] + weight_files(path)
    return FileDigest(
        sha256=_files_sha256((file.name, sha256_file(file)) for file in files),
        size=sum(file.stat().st_size for file in files),
    )


def check_data_files(files: Mapping[str, DataFile], remedy: str) -> None:
    """Refuse when a recorded data file or teacher is missing or changed, naming it and its key.

    ``remedy`` ends each message: what restoring the original file makes possible.
    """
    for key, recorded in files.items():
        path = Path(recorded.path)
        if not path.exists():
            raise DataError(f"{path}: {key} of the run is missing; restore it to {remedy}")
        digest = content_digest(path).sha256
        if digest != recorded.sha256:
            original = "model (config and weights files)" if path.is_dir() else "file"
            raise DataError(
                f"{path}: {key} changed since the run (sha256 {recorded.sha256[:12]}... recorded, now "
                f"{digest[:12]}...); restore the original {original} to {remedy}"
            )


def _paths(params: BaseModel, prefix: str) -> Iterator[tuple[str, Path]]:
    """(config key path, value) of every Path field of ``params`` and of the option models inside it.

    A list of paths yields each item, keyed with its index (``teacher[0]``).
    """
    for name in type(params).model_fields:
        value = getattr(params, name)
        if isinstance(value, Path):
            yield f"{prefix}.{name}", value
        elif isinstance(value, list):
            yield from ((f"{prefix}.{name}[{i}]", v) for i, v in enumerate(value) if isinstance(v, Path))
        elif isinstance(value, BaseModel):
            yield from _paths(value, f"{prefix}.{name}")


def features_sha256(features: Any) -> str:
    """The preprocessing fingerprint of one split: sha256 of its tokenized features as the loop reads them.

    Covers the column names and every value in row order of the ``datasets.Dataset`` the task's
    ``preprocess`` produced (input ids, masks, labels, offsets... before collation, padding and
    augmentation), so it changes with the data rows, their sampling, the tokenizer, the task's
    preprocessing code and its params. Hashed from the values rather than ``datasets``' own
    ``_fingerprint``, which mixes in a hash of the mapped function that is random when the function
    cannot be pickled deterministically (tokenizers often cannot).
    """
    digest = hashlib.sha256(json.dumps(sorted(features.column_names)).encode())
    for batch in features.with_format(None).iter(batch_size=_ROWS_PER_BATCH):
        digest.update(json.dumps(batch, sort_keys=True, default=str).encode())
    return digest.hexdigest()


def _files_sha256(named: Iterable[tuple[str, str]]) -> str:
    """One hash of (file name, content hash) pairs, in name order."""
    return hashlib.sha256(json.dumps(sorted(named)).encode()).hexdigest()


def tokenizer_sha256(tokenizer: Any) -> str | None:
    """Hash of the content of the tokenizer's files in the directory it was loaded from.

    The files are the ones transformers reads for this tokenizer class (its vocabulary files) plus its
    config, special-tokens map, added tokens and chat template file, those present. None when the
    tokenizer was not loaded from a directory. An image model's image processor (``load_input_processor``)
    is hashed from its settings.
    """
    if not takes_text(tokenizer):  # an image processor: its settings are all it holds
        return hashlib.sha256(tokenizer.to_json_string().encode()).hexdigest()
    source = Path(str(tokenizer.name_or_path))
    if not source.is_dir():
        return None
    names = {*tokenizer.vocab_files_names.values(), TOKENIZER_CONFIG_FILE, SPECIAL_TOKENS_MAP_FILE}
    names |= {ADDED_TOKENS_FILE, CHAT_TEMPLATE_FILE}
    files = [source / name for name in sorted(names) if (source / name).is_file()]
    return _files_sha256((file.name, sha256_file(file)) for file in files)


def chat_template_sha256(tokenizer: Any) -> str | None:
    """sha256 of the tokenizer's chat template (a string, or a name -> template map), None without one.

    Hashed from the loaded tokenizer, so a template that lives inside ``tokenizer_config.json`` counts
    too. A task's own prompt template is a task param, recorded verbatim with the config.
    """
    template = getattr(tokenizer, "chat_template", None)
    if not template:
        return None
    return hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()
