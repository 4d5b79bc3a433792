"""The safety gate: a classification run judges each generated reply before the server sends it.

A reply is blocked when one of ``safety.block_labels`` reaches ``safety.threshold`` in the run's
probabilities; the client then gets ``safety.refusal`` with ``finish_reason: "content_filter"``
(OpenAI's convention). The run predicts through ``inference.predict.predict_records``, the path of
``/v1/predict`` and ``tunelab predict``, in the server's model thread behind its own batcher
(``safety`` queue), so concurrent replies are judged in one forward.

A classifier reads at most its run's ``max_length`` tokens, so a reply is judged in consecutive
windows of at most that many tokens (as each window tokenises on its own) and blocked when any window
is: harmful text after the first window cannot slip through. Windows do not overlap (a phrase cut
in two at a boundary is judged in halves).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from tunelab.apps.settings import classification_run
from tunelab.errors import ConfigError, TunelabError
from tunelab.inference.artifact import Artifact, load_artifact
from tunelab.inference.predict import predict_records
from tunelab.serving.settings import SafetySettings

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Verdict:
    """The gate's judgement of one reply.

    Attributes:
        blocked: whether the reply is withheld.
        label: the block label with the highest probability over the reply's windows.
        score: that probability (0 for a reply without tokens).
    """

    blocked: bool
    label: str
    score: float


@dataclass
class SafetyGate:
    """A loaded classification run and the settings that decide which of its labels block."""

    settings: SafetySettings
    run: Artifact

    def windows(self, text: str) -> list[str]:
        """``text`` in consecutive pieces of at most the run's ``max_length`` tokens, specials included.

        One tokenisation of the reply decides every cut: a window of ``size`` tokens ends where its
        last word starts (``word_ids``: the tokenizer's own words), so it holds whole words, with the
        whitespace before them, and tokenises on its own into exactly its slice of the reply's tokens.
        Only a word longer than a window is cut inside; the piece after such a cut tokenises on its
        own into more pieces than it had (``##bly`` alone reads ``b ##ly``) and is shortened until it
        fits, else the run's truncation would drop its last tokens unjudged.
        """
        tokenizer = self.run.tokenizer
        size = self.run.task_params.max_length - tokenizer.num_special_tokens_to_add()
        encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        spans, n = encoding["offset_mapping"], len(encoding["input_ids"])
        words = np.asarray(encoding.word_ids(), dtype=np.int64)  # no special tokens: each has a word
        word_starts = np.flatnonzero(np.diff(words, prepend=-1))  # (W,) token index of each word's start
        out, start = [], 0
        while start < n:
            end = min(start + size, n)
            last_start = int(word_starts[np.searchsorted(word_starts, end, side="right") - 1])
            if end < n and last_start > start:
                end = last_start
            begin = spans[start - 1][1] if start else spans[0][0]  # with the whitespace before the word
            while (
                start not in word_starts
                and end - start > 1
                and self._tokens(text[begin : spans[end - 1][1]]) > size
            ):
                end -= 1
            out.append(text[begin : spans[end - 1][1]])
            start = end
        return out

    def _tokens(self, text: str) -> int:
        return len(self.run.tokenizer(text, add_special_tokens=False)["input_ids"])

    def judge(self, texts: Sequence[str], batch_size: int = 16) -> list[Verdict]:
        """One verdict per reply; every window of every reply goes through the run in one call."""
        pieces = [self.windows(text) for text in texts]
        records = [{"text": window} for windows in pieces for window in windows]
        predictions = iter(predict_records(self.run, records, batch_size) if records else [])
        block, threshold = self.settings.block_labels, self.settings.threshold
        verdicts = []
        for windows in pieces:
            scores = [
                (float(p["probabilities"][label]), label)
                for p in (next(predictions) for _ in windows)
                for label in block
            ]
            score, label = max(scores, default=(0.0, block[0]))
            verdicts.append(Verdict(score >= threshold, label, score))
        return verdicts


def load_gate(settings: SafetySettings, mute_model: str | None = None, device: str = "cpu") -> SafetyGate:
    """Load ``settings.run`` and check it can judge: a classification run with every block label.

    ``mute_model`` names a served model that generates nothing: it has no reply to judge, so a gate
    on it is a mistake in the settings.

    Raises:
        ConfigError: naming ``safety``, ``safety.run`` or ``safety.block_labels``, before the server starts.
    """
    if mute_model is not None:
        raise ConfigError(
            f"safety: {mute_model} generates no replies to judge; serve a generating model or an assistant "
            "with a generator_run, or drop the safety settings"
        )
    try:
        run = classification_run(load_artifact(settings.run, device), "safety.run")
    except ConfigError:
        raise
    except TunelabError as exc:
        raise ConfigError(f"safety.run: {exc}") from None
    unknown = [label for label in settings.block_labels if label not in run.labels]
    if unknown:
        raise ConfigError(
            f"safety.block_labels: {unknown} are not labels of {settings.run}; its labels: "
            f"{', '.join(run.labels)}"
        )
    logger.info(
        "safety gate: %s blocks %s at probability >= %s",
        settings.run,
        settings.block_labels,
        settings.threshold,
    )
    return SafetyGate(settings, run)
