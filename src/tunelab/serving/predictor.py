"""Predictors: a loaded model plus the blocking calls the batcher runs in its worker thread.

Which predictor a directory gets follows its ``config.json``: a ``*ForCausalLM`` generates text
(OpenAI-style routes); a tunelab artifact or HF sequence classifier predicts labels and embeds with
its backbone; any other encoder (e.g. the shipped ``minilm-l6``) only embeds. Everything here is
synchronous on purpose: the event loop never runs torch, the batcher's single worker thread does.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer

from tunelab.assets import resolve_model
from tunelab.errors import CheckpointError, TunelabError
from tunelab.evaluation.generate import Generation, GenerationJob, generate
from tunelab.evaluation.predict import predict_records
from tunelab.export.artifact import RUN_FILE, Artifact, load_artifact, resolve_artifact_dir
from tunelab.tasks.causal_lm import chat_prompt
from tunelab.tasks.spec import mean_pool


def _count_tokens(tokenizer: Any, texts: Sequence[str], add_special_tokens: bool = True) -> list[int]:
    return [len(ids) for ids in tokenizer(list(texts), add_special_tokens=add_special_tokens)["input_ids"]]


@dataclass
class EncoderPredictor:
    """An encoder: embeddings always; label predictions when it carries a classification head."""

    model_id: str
    tokenizer: Any
    encoder: torch.nn.Module
    artifact: Artifact | None = None

    @property
    def task(self) -> str | None:
        """Task name for ``/v1/predict``, or None when the model has no task head."""
        return self.artifact.task.name if self.artifact is not None else None

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Tokens per text as the model sees it (special tokens included)."""
        return _count_tokens(self.tokenizer, texts)

    def predict(self, records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """The task's predictions for one micro-batch of raw input records."""
        if self.artifact is None:
            raise RuntimeError(f"{self.model_id} has no task head")
        return predict_records(self.artifact, records, batch_size=len(records))

    @torch.no_grad()
    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """(N, H) float32 unit vectors: mean-pooled last hidden state of the encoder."""
        batch = self.tokenizer(list(texts), padding=True, truncation=True, return_tensors="pt")
        device = next(self.encoder.parameters()).device
        batch = {k: v.to(device) for k, v in batch.items()}
        hidden = self.encoder(**batch).last_hidden_state  # (B, T, H)
        return mean_pool(hidden, batch["attention_mask"]).float().cpu().numpy()


@dataclass
class GeneratorPredictor:
    """A causal LM behind the OpenAI-style routes."""

    model_id: str
    tokenizer: Any
    model: torch.nn.Module

    def count_tokens(self, texts: Sequence[str], add_special_tokens: bool = True) -> list[int]:
        """Prompt tokens per text."""
        return _count_tokens(self.tokenizer, texts, add_special_tokens)

    def chat_prompt(self, messages: list[dict[str, str]]) -> str:
        """Render messages with the model's chat template (the one training used), ready for the reply."""
        try:
            return chat_prompt(self.tokenizer, messages)
        except TunelabError as exc:
            raise ValueError(f"{self.model_id}: {exc}; use /v1/completions with a raw prompt") from None

    def generate(self, job: GenerationJob) -> Generation:
        """Run one job (blocking, in the batcher's worker thread); streams into ``job.streamer`` when set."""
        return generate(self.model, self.tokenizer, job)


Predictor = EncoderPredictor | GeneratorPredictor


def _model_id(name_or_path: str, path: Path) -> str:
    return path.parent.name if path.name == "best" else path.name or name_or_path


def load_predictor(name_or_path: str, device: str = "cpu") -> Predictor:
    """Load the model dir (or shipped model name) and pick the predictor its config calls for."""
    path = resolve_artifact_dir(resolve_model(name_or_path))  # a run dir serves its best/
    config_file = path / "config.json"
    if not config_file.is_file():
        raise CheckpointError(f"{path}: no config.json; give a tunelab model dir or a Hugging Face model dir")
    if not any(path.glob("*.safetensors")):
        raise CheckpointError(f"{path}: no .safetensors weights; tunelab only loads safetensors models")
    archs = json.loads(config_file.read_text(encoding="utf-8")).get("architectures") or []
    model_id = _model_id(name_or_path, path)
    if any(a.endswith("ForCausalLM") for a in archs):
        model = AutoModelForCausalLM.from_pretrained(path, trust_remote_code=False, dtype=torch.float32)
        tok = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
        return GeneratorPredictor(model_id, tok, model.to(device).eval())
    if (path / RUN_FILE).is_file() or any(a.endswith("ForSequenceClassification") for a in archs):
        art = load_artifact(path, device)
        return EncoderPredictor(model_id, art.tokenizer, art.model.base_model, art)
    model = AutoModel.from_pretrained(path, trust_remote_code=False, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
    return EncoderPredictor(model_id, tok, model.to(device).eval())
