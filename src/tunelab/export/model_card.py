"""Model card ``README.md`` for an exported model: YAML front matter (Hub metadata) + a short body.

The front matter follows the Hugging Face model-card metadata keys (``license``, ``language``,
``base_model``, ``datasets``, ``metrics``, ``pipeline_tag``, ``tags``) plus tunelab keys for what
the Hub schema has no field for (labels, export steps, data licence, intended use). Licences come
from ``tunelab.assets`` for shipped models and from the ``SOURCE.txt`` that ``tunelab data prepare``
writes next to shipped data; anything else is marked unknown, so a card never claims a licence
nobody stated.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from tunelab.assets import MODELS
from tunelab.models.run_info import RunInfo
from tunelab.tasks import TASKS

UNKNOWN = "unknown: not a shipped asset; state its licence before publishing"


def base_model_license(name_or_path: str) -> str:
    """Licence of a shipped base model, or UNKNOWN for a local directory."""
    return MODELS[name_or_path].license if name_or_path in MODELS else UNKNOWN


def data_license(train_file: str) -> str:
    """The ``SOURCE.txt`` line beside prepared shipped data, or UNKNOWN."""
    source = Path(train_file).parent / "SOURCE.txt"
    return source.read_text(encoding="utf-8").strip() if source.is_file() else UNKNOWN


def _spdx(license_text: str) -> str:
    """The Hub ``license`` field wants an SPDX-like id: the first word of a shipped licence, else other."""
    first = license_text.split()[0]
    return first.lower() if first[0].isupper() and "-" in first else "other"


def card_metadata(info: RunInfo) -> dict[str, Any]:
    """Front-matter dict from an export's run record."""
    cfg = info.config
    base = cfg.model.start if cfg is not None else UNKNOWN
    data = [cfg.data.train_file, cfg.data.dev_file, cfg.data.test_file] if cfg is not None else []
    base_license = base_model_license(base)
    metrics = info.dev_metrics or {}
    steps = info.export.steps if info.export is not None else []
    task = TASKS.get(info.task)
    return {
        "license": _spdx(base_license),
        "language": ["en"] if base in MODELS else [],
        "base_model": base,
        "pipeline_tag": task.pipeline_tag or task.name,
        "tags": ["tunelab", *steps],
        "datasets": [str(f) for f in data if f],
        "metrics": [
            {"name": name, "type": name, "value": round(float(metrics[name]), 4), "split": "dev"}
            for name in ("accuracy", "macro_f1")
            if name in metrics
        ],
        "tunelab": {
            "task": info.task,
            "labels": list(info.labels),
            "base_model_license": base_license,
            "data_license": data_license(str(data[0])) if data else UNKNOWN,
            "export": steps,
        },
    }


def render_model_card(info: RunInfo, parity_markdown: str) -> str:
    """The full README.md text: front matter, intended use, limitations, export parity table."""
    meta = card_metadata(info)
    labels = ", ".join(meta["tunelab"]["labels"])
    language = ", ".join(meta["language"]) or "language not recorded"
    steps = ", ".join(meta["tunelab"]["export"]) or "none (plain copy)"
    return (
        f"---\n{yaml.safe_dump(meta, sort_keys=False, allow_unicode=True)}---\n\n"
        f"# {meta['base_model']} fine-tuned for {info.task} ({labels})\n\n"
        "Trained and exported with tunelab. Load it with `tunelab eval`, `tunelab predict` or "
        "`tunelab serve` on this directory.\n\n"
        "## Intended use\n\n"
        f"Single-label {info.task} of short texts ({language}) into: {labels}. It was fine-tuned on the "
        "data listed above and is meant for texts like them.\n\n"
        "## Limitations\n\n"
        "- Scores are on the dev split listed above only; measure on your own data before relying on it.\n"
        "- Inputs longer than the training `max_length` are truncated.\n"
        "- It inherits the biases of its base model and training data; do not use it for decisions "
        "about people.\n\n"
        f"## Licences\n\n- base model: {meta['tunelab']['base_model_license']}\n"
        f"- data: {meta['tunelab']['data_license']}\n\n"
        f"## Export\n\nSteps: {steps}.\n\n{parity_markdown}\n"
    )
