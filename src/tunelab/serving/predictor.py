"""The served model and what it can do: predict with its task, embed, generate.

:func:`load_predictor` loads a directory once and records its capabilities; ``create_app`` adds the
routes of exactly those, so no route tests a task's name or a model class:

- **predict** (``/v1/predict``): a tunelab run (or a plain HF directory a task declares) whose task
  sets ``TaskSpec.serve_schema``; predictions are ``inference.predict.predict_records``, the path of
  ``tunelab predict``.
- **embed** (``/v1/embeddings``): an encoder-only model; mean-pooled backbone states.
- **generate** (``/v1/completions``, ``/v1/chat/completions``): a causal LM decodes as each request
  says; an encoder-decoder (seq2seq run) decodes with its run's own options (``TaskSpec.generation``),
  as ``tunelab predict`` does.
- **judge**: a safety gate's classification run judges each generated reply (``serving.safety``).
- **assist** (``/v1/chat/completions`` only): an assistant app's settings (``*_app.yaml``): its
  intent and answer-selection runs route each message (``apps.assistant``); its generator, when it
  has one, is the predictor's causal LM.

Adapter runs (a PEFT ``best/``) load through ``inference.artifact.load_artifact`` like any other run.
Everything here is synchronous on purpose: the event loop never runs torch or the tokenizer; the
batchers' model thread and the tokenizer threads do.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch

from tunelab.apps.assistant import Assistant, Decision, load_assistant, load_settings
from tunelab.errors import ConfigError, ServingError, TunelabError
from tunelab.inference.artifact import Artifact, load_artifact, plain_hf_task
from tunelab.inference.continuous import ContinuousDecoder, supports
from tunelab.inference.explain import explain_one, explain_refusal
from tunelab.inference.generate import Generation, GenerationJob, cut_at_stop, generate
from tunelab.inference.precision import inference_autocast, store_linears_as
from tunelab.inference.predict import predict_records
from tunelab.models.adapter import is_peft_model
from tunelab.models.architectures import is_causal, mean_pool
from tunelab.models.artifact import resolve_model_dir
from tunelab.models.load import load_causal_lm, load_config, load_encoder, resolve_model, takes_text
from tunelab.models.run_info import RUN_FILE
from tunelab.serving.safety import SafetyGate, Verdict, load_gate
from tunelab.serving.settings import SafetySettings
from tunelab.tasks.causal_lm import chat_prompt
from tunelab.tasks.schemas import ExplainOptions, ServeSchema

if TYPE_CHECKING:
    from tunelab.models.protocols import Configured, HasBaseModel


class UnreadableText(ValueError):
    """The tokenizer rejected text ``index`` of a request (e.g. a lone surrogate); the route answers 422."""

    def __init__(self, index: int, reason: str) -> None:
        super().__init__(f"text {index}: {reason}")
        self.index = index
        self.reason = reason


@dataclass
class Predictor:
    """A loaded model; which of ``artifact``, ``encoder`` and ``lm`` are set decides what it serves.

    Attributes:
        model_id: the name clients pass as ``model`` and ``/v1/models`` lists.
        tokenizer: the model's tokenizer.
        artifact: the run's model bound to its task (predict; an encoder-decoder's generation).
        encoder: the bare encoder that embeds; None when the model is not encoder-only.
        lm: a causal LM that decodes as each request says; None when the model is not one.
        assistant: an assistant app's intent and answer-selection runs (its generator is ``lm``).
        gate: the safety gate that judges generated replies; None sends them unchecked.
        autocast: the dtype every model call autocasts to (``inference_autocast``); None runs fp32.
        sub_batch_size: rows per forward of a predict call, longest first (less padding per forward).
    """

    model_id: str
    tokenizer: Any
    artifact: Artifact | None = None
    encoder: torch.nn.Module | None = None
    lm: torch.nn.Module | None = None
    assistant: Assistant | None = None
    gate: SafetyGate | None = None
    autocast: torch.dtype | None = None
    sub_batch_size: int = 16

    def precision(self) -> contextlib.AbstractContextManager[Any]:
        """The context every model call runs in: the predictor's autocast, or nothing for fp32."""
        if self.autocast is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast)

    @property
    def model(self) -> torch.nn.Module:
        """The whole loaded model: the artifact's (head included), the bare one, or an assistant's intent."""
        model = (
            self.artifact.model
            if self.artifact is not None
            else self.lm
            if self.lm is not None
            else self.encoder
            if self.encoder is not None
            else self.assistant.intent.model
            if self.assistant is not None
            else None
        )
        assert model is not None, "a predictor holds a model"
        return model

    @property
    def device(self) -> torch.device:
        """Where the model's weights live."""
        return next(self.model.parameters()).device

    @property
    def schema(self) -> ServeSchema | None:
        """The task's ``/v1/predict`` schema, or None when the model has no task that declares one."""
        return self.artifact.task.serve_schema if self.artifact is not None else None

    @property
    def run_decoding(self) -> dict[str, Any] | None:
        """An encoder-decoder run's own decoding options (``TaskSpec.generation``); None otherwise."""
        art = self.artifact
        if self.lm is not None or art is None or art.task.generation is None:
            return None
        return art.task.generation(art.task_params)

    @property
    def generates(self) -> bool:
        """Whether the model continues prompts (a causal LM, or an encoder-decoder run)."""
        return self.lm is not None or self.run_decoding is not None

    def count_tokens(self, texts: Sequence[str], add_special_tokens: bool = True) -> list[int]:
        """Tokens per text as the model sees it, untruncated (limits are checked on these).

        Raises:
            UnreadableText: the tokenizer rejects one of the texts.
        """
        counts = []
        for i, text in enumerate(texts):
            try:
                ids = self.tokenizer(text, add_special_tokens=add_special_tokens, verbose=False)["input_ids"]
            except (TypeError, ValueError) as exc:  # e.g. a lone surrogate: the Rust tokenizer's TypeError
                raise UnreadableText(i, type(exc).__name__) from None
            counts.append(len(ids))
        return counts

    def refusals(self, records: Sequence[Mapping[str, Any]]) -> list[tuple[int, str]]:
        """(index, why) of each record the task cannot take (``TaskSpec.check_input``)."""
        art = self.artifact
        check = art.task.check_input if art is not None else None
        if check is None or art is None:
            return []
        found = ((i, check(record, art.task_params)) for i, record in enumerate(records))
        return [(i, why) for i, why in found if why is not None]

    def predict(self, records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """The task's predictions for one micro-batch of raw input records."""
        if self.artifact is None:
            raise RuntimeError(f"{self.model_id} has no task")
        with self.precision():
            return predict_records(self.artifact, records, batch_size=self.sub_batch_size)

    @property
    def explains(self) -> bool:
        """Whether ``/v1/predict`` takes ``explain: true`` (the task explains and its request says so)."""
        art, schema = self.artifact, self.schema
        if art is None or schema is None or art.task.explain_input is None:
            return False
        return issubclass(schema.request, ExplainOptions)

    def explain_refusal(self, method: str) -> str | None:
        """Why the served model cannot explain with ``method`` (e.g. ig on an int8 model), or None."""
        return explain_refusal(self.model, method)

    def explain(self, items: Sequence[tuple[dict[str, Any], str]], steps: int) -> list[dict[str, Any]]:
        """Predictions of one micro-batch of (raw record, explain method), each with its explanations."""
        if self.artifact is None:
            raise RuntimeError(f"{self.model_id} has no task")
        records = [record for record, _ in items]
        with self.precision():
            predictions = predict_records(self.artifact, records, batch_size=self.sub_batch_size)
            return [
                {
                    **prediction,
                    "explanations": explain_one(self.artifact, record, prediction, method, steps=steps),
                }
                for (record, method), prediction in zip(items, predictions, strict=True)
            ]

    def assist(self, texts: Sequence[str]) -> list[Decision]:
        """The assistant's decision for each user message of one micro-batch."""
        if self.assistant is None:
            raise RuntimeError(f"{self.model_id} is not an assistant")
        with self.precision():
            return self.assistant.decide(texts, self.sub_batch_size)

    def judge(self, texts: Sequence[str]) -> list[Verdict]:
        """The safety gate's verdict on each generated reply of one micro-batch."""
        if self.gate is None:
            raise RuntimeError(f"{self.model_id} has no safety gate")
        with self.precision():
            return self.gate.judge(texts, self.sub_batch_size)

    @torch.no_grad()
    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """(N, H) float32 unit vectors: mean-pooled last hidden state of the encoder."""
        if self.encoder is None:
            raise RuntimeError(f"{self.model_id} is not an encoder")
        batch = self.tokenizer(list(texts), padding=True, truncation=True, return_tensors="pt")
        device = self.device
        batch = {k: v.to(device) for k, v in batch.items()}
        with self.precision():
            hidden = self.encoder(**batch).last_hidden_state  # (B, T, H)
        return mean_pool(hidden, batch["attention_mask"]).float().cpu().numpy()

    def prompt_has_specials(self, chat: bool) -> bool:
        """Whether a prompt is tokenised with special tokens: not a chat-template rendering (holds them)."""
        return not (chat and self.lm is not None)

    def chat_prompt(self, messages: Sequence[Mapping[str, str]]) -> str:
        """The prompt of a conversation: the chat template's rendering, or an encoder-decoder's source text.

        Raises:
            ValueError: the model cannot take this conversation (no chat template; an encoder-decoder
                given anything but one user message).
        """
        if self.lm is None:
            if len(messages) != 1 or messages[0]["role"] != "user":
                raise ValueError(
                    f"messages: {self.model_id} is an encoder-decoder that answers one user message (its "
                    "source text); send exactly one, or use /v1/completions"
                )
            return messages[0]["content"]
        try:
            return chat_prompt(self.tokenizer, messages)
        except TunelabError as exc:
            raise ValueError(f"{self.model_id}: {exc}; use /v1/completions with a raw prompt") from None

    def continuous_decoder(self, max_rows: int) -> ContinuousDecoder | None:
        """A running decode batch of ``max_rows`` over the causal LM; None when it decodes one at a time.

        One at a time: ``max_rows`` 1, an encoder-decoder run, or a cache the decoder cannot batch.
        """
        if self.lm is None or max_rows <= 1 or not supports(self.lm):
            return None
        return ContinuousDecoder(self.lm, self.tokenizer, max_rows)

    def generate(self, job: GenerationJob) -> Generation:
        """Run one job (blocking, in the model thread); streams into ``job.streamer`` when set."""
        if self.lm is not None:
            with self.precision():
                return generate(self.lm, self.tokenizer, job)
        try:
            with self.precision():
                return self._generate_with_run_options(job)
        except BaseException:
            if job.streamer is not None:
                job.streamer.end()  # unblock the reader, who reports the error
            raise

    def _generate_with_run_options(self, job: GenerationJob) -> Generation:
        """An encoder-decoder's reply exactly as ``tunelab predict`` gives it, then cut at ``job.stop``.

        Beam search cannot stream, so a streamer gets the whole reply as one piece. Token counts are
        the prompt's and the reply's tokenisations; ``length`` means the run's ``max_new_tokens`` was used.
        """
        assert self.artifact is not None, "only an encoder-decoder run"
        assert self.run_decoding is not None, "only an encoder-decoder run"
        start = time.perf_counter()
        [prediction] = predict_records(self.artifact, [{"text": job.prompt}], batch_size=1)
        seconds = time.perf_counter() - start
        text, _ = cut_at_stop(prediction["generated"], job.stop)
        if job.streamer is not None:
            job.streamer.on_finalized_text(text, stream_end=True)
        [prompt_tokens] = self.count_tokens([job.prompt])
        [completion_tokens] = self.count_tokens([prediction["generated"]], add_special_tokens=False)
        at_cap = completion_tokens >= self.run_decoding["max_new_tokens"]
        return Generation(text, "length" if at_cap else "stop", prompt_tokens, completion_tokens, seconds)


def _model_id(name_or_path: str, path: Path) -> str:
    return path.parent.name if path.name == "best" else path.name or name_or_path


def _backbone(model: torch.nn.Module) -> torch.nn.Module:
    """The bare encoder inside a task model (inside its peft wrapper, adapters still applied)."""
    inner = model.get_base_model() if is_peft_model(model) else model
    return cast("HasBaseModel", inner).base_model


def _from_artifact(model_id: str, art: Artifact) -> Predictor:
    config = cast("Configured", art.model).config  # peft forwards .config to the wrapped model
    if config.is_encoder_decoder:
        predictor = Predictor(model_id, art.tokenizer, art)
    elif is_causal(config):
        predictor = Predictor(model_id, art.tokenizer, art, lm=art.model)
    elif takes_text(art.tokenizer):
        predictor = Predictor(model_id, art.tokenizer, art, encoder=_backbone(art.model))
    else:  # an image model: no text embeddings
        predictor = Predictor(model_id, art.tokenizer, art)
    if predictor.schema is None and not predictor.generates:
        raise ServingError(
            f"{art.path}: task {art.task.name!r} declares no /v1/predict schema (TaskSpec.serve_schema) and "
            "its model does not generate, so tunelab serve cannot serve it; predict with `tunelab predict`"
        )
    return predictor


def _from_model(name_or_path: str, device: str) -> Predictor:
    """A model dir, run dir or shipped model name, by what it holds: a task's run, a causal LM, an encoder."""
    path = resolve_model_dir(resolve_model(name_or_path))
    model_id = _model_id(name_or_path, path)
    config = None if (path / RUN_FILE).is_file() else load_config(path)
    if config is None or plain_hf_task(config) is not None:
        # a run's exact model (MoE, adapter), or a plain HF directory a task declares
        return _from_artifact(model_id, load_artifact(path, device))
    if any(arch.endswith("ForCausalLM") for arch in config.architectures or []):
        model, tok = load_causal_lm(path)
        return Predictor(model_id, tok, lm=model.to(device))
    model, tok = load_encoder(path)
    return Predictor(model_id, tok, encoder=model.to(device))


def _from_assistant(settings_file: Path, device: str) -> Predictor:
    """An assistant app: its runs, and its generator (a causal LM) as the predictor's ``lm``."""
    settings = load_settings(settings_file)
    assistant = load_assistant(settings, device)
    if settings.generator_run is None:
        return Predictor(settings.name, assistant.intent.tokenizer, assistant=assistant)
    generator = _from_model(settings.generator_run, device)
    if generator.lm is None:
        raise ConfigError(
            f"{settings_file}: generator_run: {settings.generator_run} is not a causal LM; name an "
            "instruction-tuned run (examples/sft_smollm2.yaml) or leave generator_run out"
        )
    return Predictor(settings.name, generator.tokenizer, lm=generator.lm, assistant=assistant)


def load_predictor(
    name_or_path: str,
    device: str = "cpu",
    precision: str = "fp32",
    sub_batch_size: int = 16,
    safety: SafetySettings | None = None,
) -> Predictor:
    """Load a model dir, run dir (its ``best/``, full or adapter) or shipped model name for serving.

    ``precision`` is the serve setting (``inference_autocast``); the default fp32 is what a caller
    that does not choose gets, the server's setting defaults to auto. An assistant app's settings
    file (``*_app.yaml``) loads the runs it names; ``safety`` the gate's run.
    """
    if name_or_path.endswith("_app.yaml"):
        predictor = _from_assistant(Path(name_or_path), device)
    else:
        predictor = _from_model(name_or_path, device)
    if safety is not None:  # a model that generates nothing has no reply to judge: refused
        predictor.gate = load_gate(safety, None if predictor.generates else predictor.model_id, device)
    predictor.autocast = inference_autocast(precision, predictor.device, predictor.model)
    if predictor.autocast is not None:
        store_linears_as(predictor.model, predictor.autocast)
    predictor.sub_batch_size = sub_batch_size
    return predictor
