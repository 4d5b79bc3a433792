"""Generation jobs and their results, transformers' ``generate`` for one job, and stop-string handling.

Two decoders share what is here: :func:`generate_tokens` (transformers' ``model.generate``) serves
``tunelab predict --stream``, a causal LM the continuous batcher cannot batch, seq2seq evaluation and
back-translation; ``tunelab.inference.continuous`` decodes many jobs in one running batch (``tunelab
predict`` and the server for a causal LM). Both decode greedily or by seeded sampling with
temperature / top-p / top-k, up to ``max_new_tokens``, stopping at EOS or a stop string (transformers'
stop-string criterion), and both end in :func:`finished_generation`: the text is cut at the first stop
string (OpenAI's convention: the stop string is not included) and ``finish_reason`` says why
generation ended. :class:`StopScanner` cuts a stream of text pieces the same way without ever
sending part of a stop string.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import torch
from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

if TYPE_CHECKING:
    from tunelab.models.protocols import Generates


@dataclass
class GenerationJob:
    """One prompt to continue, and how to decode it."""

    prompt: str
    max_new_tokens: int
    temperature: float = 1.0  # 0 = greedy
    top_p: float = 1.0
    top_k: int = 0  # 0 = off
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    add_special_tokens: bool = True  # False for chat prompts: the template already holds BOS
    streamer: Any = None  # a transformers streamer (e.g. AsyncTextIteratorStreamer) fed as tokens come
    cancelled: threading.Event = field(default_factory=threading.Event)


@dataclass
class Generation:
    """A finished continuation: its text (cut at the first stop string), token counts and speed.

    ``prompt_tokens`` is the tokenised prompt's length, ``completion_tokens`` the new tokens without a
    final EOS; the server reports both (``usage`` and its token metrics). ``seconds`` is the decode's
    wall time, prompt forward included, which is what a user waits for.
    """

    text: str
    finish_reason: str  # "stop" (EOS or a stop string) or "length" (max_new_tokens reached)
    prompt_tokens: int
    completion_tokens: int
    seconds: float

    @property
    def tokens_per_s(self) -> float:
        """Generated tokens per second of decoding."""
        return self.completion_tokens / self.seconds if self.seconds > 0 else 0.0


class _Cancelled(StoppingCriteria):
    """Ends generate() early once the request timed out or its client went away."""

    def __init__(self, event: threading.Event) -> None:
        self.event = event

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        return torch.full(
            (input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device
        )


def cut_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """``text`` up to the earliest stop string (excluded, as OpenAI does) and whether one occurred."""
    hits = [i for i in (text.find(s) for s in stop if s) if i >= 0]
    return (text[: min(hits)], True) if hits else (text, False)


class StopScanner:
    """Streams text while cutting it at the first stop string, even one split across pieces."""

    def __init__(self, stop: list[str]) -> None:
        self.stop = stop
        self.hold = max((len(s) for s in stop), default=1) - 1
        self.text = ""
        self.sent = 0
        self.stopped = False

    def feed(self, piece: str) -> str:
        """Text that is now safe to send (never a prefix of a stop string that may still complete)."""
        if self.stopped:
            return ""
        self.text += piece
        cut, self.stopped = cut_at_stop(self.text, self.stop)
        end = len(cut) if self.stopped else max(self.sent, len(self.text) - self.hold)
        out, self.sent = self.text[self.sent : end], end
        return out

    def flush(self) -> str:
        """Whatever was held back, once generation has ended without a stop string."""
        return "" if self.stopped else self.feed("") + self.text[self.sent :]


@torch.no_grad()
def generate_tokens(
    model: torch.nn.Module, inputs: Mapping[str, torch.Tensor], **decoding: Any
) -> torch.Tensor:
    """Token ids that ``model.generate`` decodes from tokenised ``inputs`` (the one call of it).

    (B, T) inputs -> (B, L) ids: a decoder-only model returns prompt + continuation, an
    encoder-decoder the decoder start token + continuation.
    """
    return cast("Generates", model).generate(**inputs, **decoding)


def generate_ids(
    model: torch.nn.Module, inputs: Mapping[str, torch.Tensor], decoding: Mapping[str, Any]
) -> dict[str, torch.Tensor]:
    """An encoder-decoder's generated ids (decoder start dropped) and each row's length up to its EOS.

    (B, T) inputs -> ``generated_ids`` (B, L) and ``generated_length`` (B,): the named per-row arrays a
    generating task (``TaskSpec.generation``) gathers at evaluation and prediction.
    """
    enc = {key: inputs[key] for key in ("input_ids", "attention_mask")}
    ids = generate_tokens(model, enc, **decoding)[:, 1:]  # (B, L): position 0 is the decoder start token
    config = cast("Generates", model).generation_config
    eos = config.eos_token_id if isinstance(config.eos_token_id, list) else [config.eos_token_id]
    stops = torch.tensor([i for i in (*eos, config.pad_token_id) if i is not None], device=ids.device)
    ended = torch.isin(ids, stops)
    length = torch.where(ended.any(dim=1), ended.int().argmax(dim=1), ids.shape[1])
    return {"generated_ids": ids, "generated_length": length}


def _decoding(job: GenerationJob) -> dict[str, Any]:
    """``generate`` kwargs: greedy, or sampling with every knob explicit (no model default leaks in)."""
    if job.temperature <= 0:
        return {"do_sample": False}
    return {"do_sample": True, "temperature": job.temperature, "top_p": job.top_p, "top_k": job.top_k}


@torch.no_grad()
def generate(model: torch.nn.Module, tokenizer: Any, job: GenerationJob) -> Generation:
    """Continue ``job.prompt`` (blocking); streams into ``job.streamer`` when set."""
    try:
        return _generate(model, tokenizer, job)
    except BaseException:
        if job.streamer is not None:
            job.streamer.end()  # unblock the reader, who reports the error
        raise


def _generate(model: torch.nn.Module, tokenizer: Any, job: GenerationJob) -> Generation:
    device = next(model.parameters()).device
    enc = tokenizer(job.prompt, return_tensors="pt", add_special_tokens=job.add_special_tokens)
    enc = {k: v.to(device) for k, v in enc.items()}
    if job.seed is not None:
        torch.manual_seed(job.seed)
    eos = tokenizer.eos_token_id
    start = time.perf_counter()
    out = generate_tokens(
        model,
        enc,
        max_new_tokens=job.max_new_tokens,
        **_decoding(job),
        stop_strings=job.stop or None,
        tokenizer=tokenizer if job.stop else None,
        streamer=job.streamer,
        stopping_criteria=StoppingCriteriaList([_Cancelled(job.cancelled)]),
        pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos,
    )
    seconds = time.perf_counter() - start
    prompt_len = enc["input_ids"].shape[1]
    new_ids = out[0, prompt_len:].tolist()
    return finished_generation(tokenizer, new_ids, job, prompt_len, seconds, eos_ids(model, tokenizer))


def eos_ids(model: torch.nn.Module, tokenizer: Any) -> set[int]:
    """The token ids that end a reply: the generation config's EOS (one or a list) and the tokenizer's."""
    configured = cast("Generates", model).generation_config.eos_token_id
    listed = configured if isinstance(configured, list) else [configured]
    return {i for i in (*listed, tokenizer.eos_token_id) if i is not None}


def finished_generation(
    tokenizer: Any, new_ids: list[int], job: GenerationJob, prompt_len: int, seconds: float, eos: set[int]
) -> Generation:
    """The :class:`Generation` of ``new_ids`` decoded for ``job``: a final EOS dropped, text cut at a stop.

    ``finish_reason`` is "length" only when ``max_new_tokens`` ended decoding (no EOS, no stop string).
    """
    ended_by_eos = bool(new_ids) and new_ids[-1] in eos
    if ended_by_eos:
        new_ids = new_ids[:-1]
    text, stopped = cut_at_stop(tokenizer.decode(new_ids, skip_special_tokens=True), job.stop)
    hit_length = len(new_ids) >= job.max_new_tokens and not (stopped or ended_by_eos)
    return Generation(text, "length" if hit_length else "stop", prompt_len, len(new_ids), seconds)


def stream(model: torch.nn.Module, tokenizer: Any, job: GenerationJob) -> Iterator[str | Generation]:
    """Text pieces as they are decoded (stop strings cut), then the finished :class:`Generation`.

    ``generate`` runs in a worker thread feeding transformers' ``TextIteratorStreamer``, the way
    transformers documents streaming; closing the iterator early cancels the generation.
    """
    job.streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    result: dict[str, Any] = {}

    def work() -> None:
        try:
            result["generation"] = generate(model, tokenizer, job)
        except BaseException as exc:  # re-raised in the reading thread below
            result["error"] = exc

    worker = threading.Thread(target=work, daemon=True)
    worker.start()
    scanner = StopScanner(job.stop)
    try:
        for piece in job.streamer:
            if text := scanner.feed(piece):
                yield text
        worker.join()
        if "error" in result:
            raise result["error"]
        if text := scanner.flush():
            yield text
        yield result["generation"]
    finally:
        job.cancelled.set()
        worker.join()


@dataclass(frozen=True)
class GenerationOptions:
    """How ``tunelab predict`` decodes: greedy by default (reproducible), sampling when temperature > 0."""

    max_new_tokens: int = 128
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    stop: tuple[str, ...] = ()
    seed: int | None = None

    def job(self, prompt: str) -> GenerationJob:
        """A job for ``prompt`` (a chat-template rendering, so no extra special tokens)."""
        return GenerationJob(
            prompt=prompt,
            max_new_tokens=self.max_new_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            top_k=self.top_k,
            stop=list(self.stop),
            seed=self.seed,
            add_special_tokens=False,
        )
