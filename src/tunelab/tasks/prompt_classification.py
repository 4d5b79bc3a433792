"""Classification by prompting a causal LM: each label's words are scored by their log-likelihood.

The text goes into a prompt template (inside the model's chat template when it has one); every label
has a verbalizer (a word, several words or a short description). A label's score is the summed or
mean log-probability of its verbalizer tokens after the prompt, so multi-token labels need no special
case. With no training this is zero-shot classification; training on a few labelled rows
(``data.k_shot``) minimises cross-entropy over the per-label scores, as PET does (Schick & Schütze
2021, "Exploiting Cloze Questions for Few Shot Text Classification"), under any method (``lora``...).

Calibration: a small LM prefers some label words whatever the text (SmolLM2-135M-Instruct, asked a
chat-style question, scored below the majority class on Rotten Tomatoes and BBC News). Contextual
calibration (Zhao et al. 2021, "Calibrate Before Use") divides each label's probability by its mean
probability over content-free inputs ("N/A", "", "[MASK]") in the same prompt: the logits become
``scores - log p_cf``. The content-free prompts ride in every batch as extra rows, so the prior always
comes from the model being scored (zero-shot, after PET training, in ``predict`` and in the server)
and a saved model needs no stored prior. Domain-conditional PMI (Holtzman et al. 2021) is the same
with the text-free template as the only content-free input (``content_free: [""]``).

Scoring is hand-written because no library scores fixed continuations of a shared prompt in one
forward. With ``shared_prefix`` each prompt is one row ``prompt + v_1 + ... + v_C``: a 4D
attention mask lets each verbalizer block see the prompt and its own earlier tokens, never another
block, and its position ids continue from the prompt, so every label scores as if it alone followed
the prompt, yet the prompt is read once (C times fewer prompt tokens than one row per label). The
model keeps only the logits of the last ``S + 1`` positions (``logits_to_keep``; S = all verbalizer
tokens). It is the default: on BBC News (5 labels) it scores the same as one row per label and reads
each prompt once instead of 5 times. Methods that need a 2D padding mask (peft's prompt_tuning and
prefix_tuning join one to their virtual tokens; moe's balance statistics read one) refuse it through
``TaskSpec.block_mask``; with ``shared_prefix: false`` each label is its own left-padded row
``prompt + v_c``, which they take. Either way
``score_index`` (W,) says which kept logit predicts each scored token and ``score_weights``
(C, W per prompt) holds 1 (sum) or 1/len (mean).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, field_validator
from transformers import AutoModelForCausalLM

from tunelab.config import DataConfig
from tunelab.data import TaskData, load_labeled_data
from tunelab.errors import ConfigError
from tunelab.models.architectures import is_causal
from tunelab.tasks import classification
from tunelab.tasks.classification.schema import LABEL_SCHEMA
from tunelab.tasks.spec import Batch, Features, TaskSpec

UNCALIBRATED = (
    "task.params.calibration: none: a small LM's preference for some label words then goes uncorrected "
    "(SmolLM2-135M-Instruct zero-shot on BBC News: 0.675 uncalibrated vs 0.75 contextual; after a chat "
    "question RT 0.42 and BBC 0.22, below the majority class); use contextual"
)
# Batch keys the forward must not see: targets and the scoring layout.
SCORE_KEYS = ("class_labels", "score_weights", "score_index", "content_free_rows")


class Params(BaseModel):
    """Options of the prompt_classification task (validated from ``task.params``).

    ``fit`` makes ``labels`` and every label's verbalizer explicit, so a saved model scores the same words.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    labels: list[str] | None = Field(
        default=None, min_length=2, description="Label names in id order; default: sorted train labels."
    )
    verbalizer: dict[str, str] | None = Field(
        default=None,
        description="Label -> the word(s) or description the LM scores for it; default: the label name.",
    )
    # Defaults: the best generic wording measured on SmolLM2-135M-Instruct, a plain completion. The
    # former chat question sat at the majority class (RT 0.607 vs 0.603, BBC 0.265 vs 0.245), this
    # one scored 0.630 / 0.445; prompts naming the data did far better (bench/RESULTS.md, prompt wording).
    template: str = Field(
        default="{text}\nCategory ({choices}):",
        description="Prompt with {text} (the input) and optionally {choices} (verbalizers, comma-joined).",
    )
    chat_template: bool = Field(
        default=False,
        description="Wrap the prompt as a user turn of the tokenizer's chat template, if any (small LMs "
        "scored higher continuing a plain prompt).",
    )
    score: Literal["mean", "sum"] = Field(
        default="mean", description="Per-label score: mean or summed log-probability of its tokens."
    )
    max_length: int = Field(default=256, gt=0, le=8192, description="Truncate the text to this many tokens.")
    calibration: Literal["contextual", "none"] = Field(
        default="contextual",
        description="contextual: divide label probabilities by their mean over content_free inputs "
        "(Zhao et al. 2021); none: raw verbalizer scores.",
    )
    content_free: list[str] = Field(
        default=["N/A", "", "[MASK]"],
        min_length=1,
        description="Texts put in the template to measure the label prior of contextual calibration.",
    )
    shared_prefix: bool = Field(
        default=True,
        description="Read each prompt once and score every label from it (one row, 4D attention mask); "
        "false: one row per label (prompt_tuning, prefix_tuning and moe need it).",
    )

    @field_validator("template")
    @classmethod
    def _has_text(cls, value: str) -> str:
        if "{text}" not in value:
            raise ValueError("the template must contain {text}")
        return value

    @field_validator("calibration")
    @classmethod
    def _warn_uncalibrated(cls, value: str) -> str:
        if value == "none":
            warnings.warn(UNCALIBRATED, stacklevel=2)
        return value


def load_data(cfg: DataConfig, params: Params, seed: int) -> TaskData:
    """Checked single-label text tables, as classification reads them (``data.k_shot`` applies)."""
    return load_labeled_data(cfg, params.labels, seed)


def fit(params: Params, train: Any, labels: Sequence[str]) -> Params:
    """Label order and every label's verbalizer made explicit, so a saved model scores the same words."""
    verbalizer = classification.label_texts("verbalizer", params.verbalizer, labels)
    return params.model_copy(update={"labels": list(labels), "verbalizer": verbalizer})


def _words(params: Params) -> list[str]:
    assert params.labels is not None, "fit() fills labels"
    assert params.verbalizer is not None, "fit() fills the verbalizer"
    return [params.verbalizer[name] for name in params.labels]


def uses_chat(tokenizer: Any, params: Params) -> bool:
    """Whether prompts go through the tokenizer's chat template."""
    return params.chat_template and bool(getattr(tokenizer, "chat_template", None))


def render_prompts(texts: Sequence[str], tokenizer: Any, params: Params) -> list[str]:
    """Prompt strings ending where the answer starts (after the assistant header in chat mode)."""
    choices = ", ".join(_words(params))
    prompts = [params.template.replace("{choices}", choices).replace("{text}", text) for text in texts]
    if not uses_chat(tokenizer, params):
        return prompts
    return [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False
        )
        for prompt in prompts
    ]


def prompt_ids(texts: Sequence[str], tokenizer: Any, params: Params) -> list[list[int]]:
    """Token ids of each text's prompt (texts already truncated)."""
    prompts = render_prompts(texts, tokenizer, params)
    ids: list[list[int]] = tokenizer(prompts, add_special_tokens=not uses_chat(tokenizer, params))[
        "input_ids"
    ]
    return ids


def truncate_texts(texts: Sequence[str], tokenizer: Any, max_length: int) -> list[str]:
    """Texts cut to ``max_length`` tokens; only the text is cut, never the template around it."""
    ids = tokenizer(list(texts), add_special_tokens=False, truncation=True, max_length=max_length)[
        "input_ids"
    ]
    return [
        tokenizer.decode(row) if len(row) == max_length else text
        for row, text in zip(ids, texts, strict=True)
    ]


def preprocess(batch: Batch, tokenizer: Any, params: Params, label2id: Mapping[str, int]) -> Features:
    """One feature per example: the prompt's token ids (and the gold label id when labelled)."""
    out: Features = {
        "input_ids": prompt_ids(
            truncate_texts(batch["text"], tokenizer, params.max_length), tokenizer, params
        )
    }
    if "label" in batch:
        out["labels"] = [label2id[label] for label in batch["label"]]
    return out


def verbalizer_ids(tokenizer: Any, params: Params) -> list[list[int]]:
    """Token ids of each label's verbalizer, as it follows the prompt (a leading space in plain mode)."""
    chat = uses_chat(tokenizer, params)
    sep = "" if chat or params.template[-1:].isspace() else " "
    ids = [tokenizer(sep + word, add_special_tokens=False)["input_ids"] for word in _words(params)]
    empty = [name for name, row in zip(params.labels or [], ids, strict=True) if not row]
    if empty:
        raise ConfigError(f"task.params.verbalizer: labels {empty} verbalize to no tokens; give them words")
    return ids


def content_free_ids(tokenizer: Any, params: Params) -> list[list[int]]:
    """Prompts of the content-free inputs whose label probabilities calibrate the scores; [] uncalibrated."""
    return [] if params.calibration == "none" else prompt_ids(params.content_free, tokenizer, params)


def _weights(
    verbs: Sequence[Sequence[int]], starts: Sequence[int], width: int, params: Params
) -> torch.Tensor:
    """(C, width): label c's weight (1 or 1/len) on the columns of its verbalizer tokens."""
    weights = torch.zeros(len(verbs), width)
    for c, (verb, start) in enumerate(zip(verbs, starts, strict=True)):
        weights[c, start : start + len(verb)] = 1.0 if params.score == "sum" else 1.0 / len(verb)
    return weights


def packed_batch(
    prompts: Sequence[Sequence[int]], verbs: Sequence[Sequence[int]], pad: int
) -> dict[str, Any]:
    """(R, T) rows ``[pad] prompt v_1 ... v_C`` whose 4D mask keeps each verbalizer block to the prompt.

    Left padding puts the S verbalizer tokens at the same last positions of every row. A query in
    block c sees the prompt and block c up to itself; pad queries see only themselves (a fully masked
    row would give NaN). Block c's position ids continue from the prompt's last, as if alone.
    """
    tail = [tok for verb in verbs for tok in verb]
    block = torch.tensor([c + 1 for c, verb in enumerate(verbs) for _ in verb])  # (S,)
    width, longest = len(tail), max(len(p) for p in prompts)
    total = longest + width
    ids = torch.full((len(prompts), total), pad, dtype=torch.long)
    blocks = torch.full((len(prompts), total), -1, dtype=torch.long)  # -1 pad, 0 prompt, c + 1 label c
    positions = torch.zeros((len(prompts), total), dtype=torch.long)
    offsets = torch.tensor([j for verb in verbs for j in range(len(verb))])  # (S,) index inside its block
    for r, prompt in enumerate(prompts):
        n = len(prompt)
        ids[r, total - width - n :] = torch.tensor([*prompt, *tail])
        blocks[r, total - width - n : total - width] = 0
        positions[r, total - width - n : total - width] = torch.arange(n)
        positions[r, total - width :] = n + offsets
    blocks[:, total - width :] = block
    q, k = blocks.unsqueeze(2), blocks.unsqueeze(1)  # (R, T, 1), (R, 1, T)
    causal = torch.ones(total, total, dtype=torch.bool).tril()
    allowed = causal & (k >= 0) & ((k == 0) | (k == q)) | torch.eye(total, dtype=torch.bool)
    mask = torch.zeros(allowed.shape).masked_fill(~allowed, torch.finfo(torch.float32).min)
    first = torch.tensor([j == 0 for verb in verbs for j in range(len(verb))])
    return {
        "input_ids": ids,
        "attention_mask": mask.unsqueeze(1),  # (R, 1, T, T) additive: eager and sdpa read it as is
        "position_ids": positions,
        "logits_to_keep": width + 1,
        # kept logit 0 is the prompt's last token (predicts every block's first); kept s predicts tail s+1
        "score_index": torch.where(first, 0, torch.arange(width)),
    }


def per_label_batch(
    prompts: Sequence[Sequence[int]], verbs: Sequence[Sequence[int]], pad: int
) -> dict[str, Any]:
    """(R * C, T) left-padded rows ``prompt + v_c``; each verbalizer ends its row, padded to width L."""
    seqs = [list(prompt) + list(verb) for prompt in prompts for verb in verbs]
    width, longest = max(len(v) for v in verbs), max(len(s) for s in seqs)
    ids = torch.full((len(seqs), longest), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), longest), dtype=torch.long)
    for i, seq in enumerate(seqs):
        ids[i, longest - len(seq) :] = torch.tensor(seq)
        mask[i, longest - len(seq) :] = 1
    return {
        "input_ids": ids,
        "attention_mask": mask,
        "position_ids": (mask.cumsum(-1) - 1).clamp(min=0),  # real tokens only: any batch scores alike
        "logits_to_keep": width + 1,
        "score_index": torch.arange(width),
    }


def collator(tokenizer: Any, params: Params) -> Any:
    """Rows (+ the content-free prompts) -> the model's inputs and the scoring layout of ``label_scores``."""
    verbs = verbalizer_ids(tokenizer, params)
    free = content_free_ids(tokenizer, params)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if params.shared_prefix:
        starts = [sum(len(v) for v in verbs[:c]) for c in range(len(verbs))]
        weights = _weights(verbs, starts, sum(len(v) for v in verbs), params)  # (C, S)
    else:
        width = max(len(v) for v in verbs)
        weights = _weights(
            verbs, [c * width + width - len(v) for c, v in enumerate(verbs)], len(verbs) * width, params
        )
    build = packed_batch if params.shared_prefix else per_label_batch

    def collate(rows: list[dict[str, Any]]) -> dict[str, Any]:
        batch = build([row["input_ids"] for row in rows] + free, verbs, pad)
        batch |= {"score_weights": weights, "content_free_rows": len(free)}
        if "labels" in rows[0]:
            batch["class_labels"] = torch.tensor([row["labels"] for row in rows])
        return batch

    return collate


def calibrate(scores: torch.Tensor, free: torch.Tensor) -> torch.Tensor:
    """(B, C) scores minus the log of the label probabilities averaged over content-free rows (K, C).

    Zhao et al.'s W = diag(p_cf)^-1 in log space; the softmax of the result is their calibrated,
    renormalised probability. In training the gradient flows through the prior too: it is the loss of
    the calibrated classifier, so a step that only shifts every input toward one label changes nothing
    (with a detached prior such steps are wasted, and PET on toy data stalled at 0.58 against 0.92).
    """
    prior = free.softmax(-1).mean(0).log()  # (C,)
    return scores - prior


def label_scores(outputs: Any, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """(B, C) per-label scores: weighted verbalizer log-probabilities, calibrated when asked."""
    index, weights = batch["score_index"], batch["score_weights"]  # (W,), (C, W * rows per prompt)
    width = index.numel()
    kept = outputs.logits[:, -(width + 1) :].float()  # (rows, W + 1, V)
    picked = kept[:, index]  # (rows, W, V): the logit that predicts each scored token
    targets = batch["input_ids"][:, -width:].unsqueeze(-1)  # (rows, W, 1)
    logp = picked.gather(-1, targets).squeeze(-1) - picked.logsumexp(-1)  # (rows, W)
    scores = logp.reshape(-1, weights.shape[1]) @ weights.T  # (R, C): one row per prompt
    n_free = int(batch["content_free_rows"])
    if n_free == 0:
        return {"logits": scores}
    return {"logits": calibrate(scores[:-n_free], scores[-n_free:])}


def loss(
    outputs: Any, batch: Mapping[str, torch.Tensor], params: Params, label_smoothing: float = 0.0
) -> torch.Tensor:
    """PET's loss: cross-entropy of the gold label over the per-label scores."""
    scores = label_scores(outputs, batch)["logits"]
    return F.cross_entropy(scores, batch["class_labels"], label_smoothing=label_smoothing)


def loss_terms(outputs: Any, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Evaluation loss: summed cross-entropy over the label scores, one target per example."""
    if "class_labels" not in batch:
        return None
    scores = label_scores(outputs, batch)["logits"]
    gold = batch["class_labels"]
    return F.cross_entropy(scores, gold, reduction="sum"), gold.new_tensor(gold.numel())


def count_examples(batch: Mapping[str, torch.Tensor], params: Any) -> torch.Tensor:
    """Targets of a training batch: its examples, not its rows (C per example, plus content-free ones)."""
    return torch.tensor(len(batch["class_labels"]))


def block_mask(params: Params) -> str | None:
    """Why the batches carry a 4D mask (``shared_prefix``), for the methods that need a 2D one."""
    if params.shared_prefix:
        return (
            "task.params.shared_prefix: true packs every label after one prompt under a 4D attention "
            "mask; set shared_prefix: false (one row per label)"
        )
    return None


def check_model(config: Any, params: Params) -> None:
    """Verbalizer scoring reads next-token probabilities, which only a causal LM gives."""
    if not is_causal(config):
        raise ConfigError(
            f"model.name_or_path: prompt_classification scores label words with a causal LM, and a "
            f"{config.model_type} model is not one; use e.g. smollm2-135m-instruct"
        )


TASK = TaskSpec(
    name="prompt_classification",
    params=Params,
    model_class=AutoModelForCausalLM,
    head_modules=(),
    metric_names=("accuracy", "macro_f1", "micro_f1"),
    load_data=load_data,
    read_eval=classification.read_single_label,
    preprocess=preprocess,
    collator=collator,
    postprocess=classification.predict_single_label,
    metrics=classification.metrics,
    outputs=label_scores,
    loss_terms=loss_terms,
    target_keys=SCORE_KEYS,
    loss=loss,
    count_targets=count_examples,
    fit=fit,
    check_model=check_model,
    few_shot=True,
    zero_shot=True,
    serve_schema=LABEL_SCHEMA,  # labels + probabilities, as classification
    why_no_logits=(
        "its label scores are verbalizer log-likelihoods read from a causal LM's vocabulary logits"
    ),
    block_mask=block_mask,
)
