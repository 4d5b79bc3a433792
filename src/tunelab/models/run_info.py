"""The run record ``tunelab_run.json``: one typed, versioned model, written and read only here.

Every saved model directory carries it (a run's ``best/``, an export): the task and its params, the
label order, the input columns, the resolved config, the dev metrics of these weights, the adapter's
base model, what an export did, the provenance (library versions, git sha, CPU model and flags) and
the manifest ``tunelab verify`` checks a run against: the sha256 and size of every data file (and of
every teacher model a method read), the
preprocessing fingerprint, the tokenizer's and chat template's hashes (``models.manifest``) and the
checksums of the weights files written next to the record.
Training writes it, export rewrites it, prediction and serving read it; typed fields make a missing
or misspelt key an error at the boundary instead of a ``KeyError`` three layers later.

Versioning: ``version`` is written into every record. A record without one predates versioning and
has exactly version 1's fields, so it reads as version 1. Any other version is refused with what to
do, never half-read. A new field with a default (the manifest fields) keeps the version: every older
record still reads, with the field empty.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tunelab import __version__
from tunelab.config import RunConfig
from tunelab.data import Columns
from tunelab.errors import CheckpointError, ConfigError, format_validation_error
from tunelab.io import sha256_file

RUN_FILE = "tunelab_run.json"
RUN_INFO_VERSION = 1
_VERSIONED = ("torch", "transformers", "tokenizers", "accelerate", "datasets", "safetensors", "scikit-learn")
# The CPU flags that decide which bf16 / int8 kernels torch can use (bf16 matmul is ~2.3x fp32 with
# avx512_bf16 and ~100x slower without it), so every record and benchmark names them.
CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")
# "0" or "1" overrides the CPU bf16 detection: the test suite pins 0 so every CPU runs the same
# (fp32) numerics, and a user can force either branch of ``precision: auto`` (training and serving).
CPU_BF16_ENV = "TUNELAB_CPU_BF16"
WEIGHT_SUFFIXES = (".safetensors", ".onnx")  # every weights file tunelab writes (model, adapter, int8, ONNX)


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FileDigest(_Record):
    """A file's content checksum and size in bytes."""

    sha256: str = Field(description="Hex sha256 of the file's bytes.")
    size: int = Field(description="Size in bytes.")


class DataFile(FileDigest):
    """A data file the run read, or a teacher model (one hash of its config and weights), by absolute path."""

    path: str = Field(
        description="Absolute path of the file (a teacher: its model dir) when the run read it."
    )


class AdapterInfo(_Record):
    """Where an adapter artifact's base weights come from."""

    base_model: str = Field(description="Shipped model name or local directory the adapter applies to.")


class ExportInfo(_Record):
    """What ``tunelab export`` did to the source model, and the parity report of before vs after."""

    source: str = Field(description="The exported model directory.")
    steps: list[str] = Field(description="Steps in the order applied, e.g. merged, int8, onnx.")
    merged: dict[str, Any] | None = Field(default=None, description="Merge dtype, logit difference, base.")
    pruned: dict[str, Any] | None = Field(default=None, description="Pruning method, sparsity, recovery.")
    quantized: dict[str, Any] | None = Field(default=None, description="int8 method and weights file.")
    onnx: dict[str, Any] | None = Field(default=None, description="ONNX file and its parity with eager.")
    parity: dict[str, Any] = Field(description="Dev metrics, size and latency before and after.")


class RunInfo(_Record):
    """The content of ``tunelab_run.json``."""

    version: int = Field(default=RUN_INFO_VERSION, description="Record format version.")
    task: str = Field(description="Task registry name the model serves.")
    task_params: dict[str, Any] = Field(default_factory=dict, description="The task's fitted params.")
    labels: list[str] = Field(default_factory=list, description="Label names in id order.")
    columns: Columns = Field(default=Columns(text="text", label=None), description="Input columns.")
    seed: int | None = Field(default=None, description="The run's seed.")
    processes: int = Field(
        default=1, ge=1, description="Processes that trained it (world size); verify re-runs with as many."
    )
    config: RunConfig | None = Field(default=None, description="The resolved run config.")
    step: int | None = Field(default=None, description="Optimizer step of these weights.")
    dev_metrics: dict[str, Any] | None = Field(default=None, description="Dev metrics of these weights.")
    adapter: AdapterInfo | None = Field(default=None, description="Set on adapter artifacts.")
    export: ExportInfo | None = Field(default=None, description="Set on exported models.")
    versions: dict[str, str] = Field(default_factory=dict, description="Library versions at writing.")
    hardware: dict[str, Any] = Field(
        default_factory=dict, description="CPU model and flags (CPU_FLAGS), CUDA device, at writing."
    )
    git_sha: str | None = Field(default=None, description="tunelab's commit at writing, if known.")
    data_files: dict[str, DataFile] = Field(
        default_factory=dict,
        description="Every data file and teacher model the run read, by config key (data.train_file...).",
    )
    features_sha256: dict[str, str] = Field(
        default_factory=dict, description="Preprocessing fingerprint per split (models.manifest)."
    )
    tokenizer_sha256: str | None = Field(default=None, description="Hash of the tokenizer's files.")
    chat_template_sha256: str | None = Field(
        default=None, description="Hash of the tokenizer's chat template, when it has one."
    )
    weights: dict[str, FileDigest] = Field(
        default_factory=dict, description="Checksum of each weights file beside the record, at writing."
    )


def library_versions() -> dict[str, str]:
    """Versions of Python, tunelab and the libraries that shape a model's numbers."""
    versions = {"python": platform.python_version(), "tunelab": __version__}
    for name in _VERSIONED:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def cpu_info(cpuinfo: Path = Path("/proc/cpuinfo")) -> dict[str, Any]:
    """CPU model name and which of CPU_FLAGS it has, from ``cpuinfo`` (unknown when unreadable)."""
    model, flags = "unknown", set[str]()
    try:
        lines = cpuinfo.read_text(encoding="utf-8").splitlines()
    except OSError:
        lines = []
    for line in lines:
        key, _, value = line.partition(":")
        if key.strip() == "model name" and model == "unknown":
            model = value.strip()
        elif key.strip() == "flags" and not flags:
            flags = set(value.split())
    return {"cpu": model, "flags": {flag: flag in flags for flag in CPU_FLAGS}}


def cpu_has_native_bf16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """True when the CPU has bf16 instructions (AVX512-BF16 or AMX); without them bf16 is ~100x slower.

    ``TUNELAB_CPU_BF16`` (0 or 1), when set, decides instead of the flags.
    """
    forced = os.environ.get(CPU_BF16_ENV)
    if forced is not None:
        if forced not in ("0", "1"):
            raise ConfigError(f"{CPU_BF16_ENV}={forced!r}: use 0 (no native bf16) or 1 (native bf16)")
        return forced == "1"
    flags = cpu_info(cpuinfo)["flags"]
    return bool(flags["avx512_bf16"] or flags["amx_bf16"])


def hardware_info() -> dict[str, Any]:
    """What the numbers of a run depend on besides the code: the CPU and its flags, the CUDA device."""
    cuda = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {**cpu_info(), "cuda": cuda}


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
    return (out.stdout.strip() or None) if out.returncode == 0 else None


def file_digest(path: Path) -> FileDigest:
    """sha256 and size of ``path``."""
    return FileDigest(sha256=sha256_file(path), size=path.stat().st_size)


def weight_files(model_dir: Path) -> list[Path]:
    """Files holding weights in a model dir (safetensors, ONNX)."""
    return sorted(p for p in model_dir.iterdir() if p.suffix in WEIGHT_SUFFIXES)


def weights_digests(model_dir: Path) -> dict[str, FileDigest]:
    """Checksums of the weights files in ``model_dir``, by file name."""
    return {p.name: file_digest(p) for p in weight_files(model_dir)}


def write_run_info(dest: Path, info: RunInfo) -> None:
    """``tunelab_run.json`` = ``info`` plus fresh provenance, into ``dest`` (a temp dir being filled).

    Called once the weights are in ``dest``: their checksums are taken here, so a record is never
    written with another directory's (an export's) weights checksums.
    """
    provenance = {
        "versions": library_versions(),
        "git_sha": git_sha(),
        "hardware": hardware_info(),
        "weights": weights_digests(dest),
    }
    record = info.model_copy(update=provenance)
    text = json.dumps(record.model_dump(mode="json", exclude_none=True), indent=2)
    (dest / RUN_FILE).write_text(text, encoding="utf-8")


def parse_run_info(raw: Any, where: str) -> RunInfo:
    """Validate a decoded record; ``where`` names its file in the error."""
    if not isinstance(raw, dict):
        raise CheckpointError(f"{where}: expected a JSON object, got {type(raw).__name__}")
    version = raw.get("version", RUN_INFO_VERSION)  # unversioned records have version 1's fields
    if version != RUN_INFO_VERSION:
        newer = isinstance(version, int) and version > RUN_INFO_VERSION
        raise CheckpointError(
            f"{where}: run record version {version!r}; this tunelab {__version__} reads version "
            f"{RUN_INFO_VERSION} only. "
            + ("Upgrade tunelab to load it." if newer else "Re-train or re-export it with this tunelab.")
        )
    try:
        return RunInfo.model_validate(raw)
    except ValidationError as exc:
        raise CheckpointError(
            f"{where}: invalid run record:\n{format_validation_error(exc, RunInfo)}"
        ) from None


def read_run_info(model_dir: Path) -> RunInfo | None:
    """The record of ``model_dir``, or None when it has none (a plain Hugging Face directory)."""
    path = model_dir / RUN_FILE
    if not path.is_file():
        return None
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: not valid JSON ({exc}); the model directory is damaged") from None
    return parse_run_info(raw, str(path))
