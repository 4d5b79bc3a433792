"""Predictors: a loaded model plus the blocking calls the batcher runs in its worker thread.

Which predictor a directory gets follows its ``config.json``: a ``*ForCausalLM`` generates text
(OpenAI-style routes); a tunelab artifact, or a plain HF directory a task declares
(``TaskSpec.hf_architecture``), predicts with its task's ``/v1/predict`` schema and embeds with its
backbone; any other encoder (e.g. the shipped ``minilm-l6``) only embeds. Everything here is
synchronous on purpose: the event loop never runs torch, the batcher's single worker thread does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch

from tunelab.errors import ServingError, TunelabError
from tunelab.inference.artifact import Artifact, load_artifact, plain_hf_task
from tunelab.inference.generate import Generation, GenerationJob, generate
from tunelab.inference.predict import predict_records
from tunelab.models.adapter import is_adapter_dir
from tunelab.models.architectures import mean_pool
from tunelab.models.artifact import resolve_model_dir
from tunelab.models.load import load_causal_lm, load_config, load_encoder, resolve_model
from tunelab.models.run_info import RUN_FILE
from tunelab.tasks.causal_lm import chat_prompt
from tunelab.tasks.schemas import ServeSchema

if TYPE_CHECKING:
    from tunelab.models.protocols import HasBaseModel


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
    def schema(self) -> ServeSchema | None:
        """The task's ``/v1/predict`` schema, or None when the model has no task head."""
        return self.artifact.task.serve_schema if self.artifact is not None else None

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
    path = resolve_model_dir(resolve_model(name_or_path))  # a run dir serves its best/
    model_id = _model_id(name_or_path, path)
    if is_adapter_dir(path):
        raise ServingError(
            f"{path}: an adapter artifact (a PEFT run's best/); merge it into a full model first: "
            f"tunelab export {path} --merge --to MERGED, then serve MERGED"
        )
    config = load_config(path)
    archs = config.architectures or []
    has_record = (path / RUN_FILE).is_file()
    if any(a.endswith("ForCausalLM") for a in archs):
        if has_record:  # the run's exact model (e.g. MoE-upcycled layers), not a plain reload
            art = load_artifact(path, device)
            return GeneratorPredictor(model_id, art.tokenizer, art.model)
        model, tok = load_causal_lm(path)
        return GeneratorPredictor(model_id, tok, model.to(device))
    if has_record or plain_hf_task(config) is not None:
        art = load_artifact(path, device)
        if art.task.serve_schema is None:
            raise ServingError(
                f"{path}: task {art.task.name!r} declares no /v1/predict schema, so tunelab serve cannot "
                "serve it; predict with `tunelab predict` instead"
            )
        encoder = cast("HasBaseModel", art.model).base_model
        return EncoderPredictor(model_id, art.tokenizer, encoder, art)
    model, tok = load_encoder(path)
    return EncoderPredictor(model_id, tok, model.to(device))
