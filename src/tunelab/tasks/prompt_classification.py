"""Classification by prompting a causal LM: each label's words are scored by their log-likelihood.

The text goes into a prompt template (inside the model's chat template when it has one); every label
has a verbalizer (a word, several words or a short description). A label's score is the summed or
mean log-probability of its verbalizer tokens after the prompt, so multi-token labels need no special
case. With no training this is zero-shot classification; training on a few labelled rows
(``data.k_shot``) minimises cross-entropy over the per-label scores, as PET does (Schick & Schütze
2021, "Exploiting Cloze Questions for Few Shot Text Classification"), under any method (``lora``...).

Scoring is hand-written because no library scores fixed continuations in one batched forward: the
collator builds, per example, one left-padded sequence per label (prompt + verbalizer), and the model
keeps only the logits of the last ``L + 1`` positions (``logits_to_keep``; L = longest verbalizer), so
a batch costs one forward of (B * C, T) tokens and (B * C, L + 1, vocab) logits, never the full
(B * C, T, vocab). ``score_weights`` (B, C, L) holds 1 (sum) or 1/len (mean) on each label's tokens.
"""

from __future__ import annotations

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
from tunelab.tasks.spec import Batch, Features, TaskSpec

SCORE_KEYS = ("class_labels", "score_weights")  # batch keys the forward must not see at evaluation


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
    template: str = Field(
        default="{text}\n\nWhich one of these describes the text above: {choices}? Answer with one of them.",
        description="Prompt with {text} (the input) and optionally {choices} (verbalizers, comma-joined).",
    )
    chat_template: bool = Field(
        default=True, description="Wrap the prompt as a user turn of the tokenizer's chat template, if any."
    )
    score: Literal["mean", "sum"] = Field(
        default="mean", description="Per-label score: mean or summed log-probability of its tokens."
    )
    max_length: int = Field(default=256, gt=0, le=8192, description="Truncate the text to this many tokens.")

    @field_validator("template")
    @classmethod
    def _has_text(cls, value: str) -> str:
        if "{text}" not in value:
            raise ValueError("the template must contain {text}")
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
    prompts = render_prompts(truncate_texts(batch["text"], tokenizer, params.max_length), tokenizer, params)
    out: Features = {
        "input_ids": tokenizer(prompts, add_special_tokens=not uses_chat(tokenizer, params))["input_ids"]
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


def collator(tokenizer: Any, params: Params) -> Any:
    """Rows -> (B * C, T) left-padded prompt+verbalizer sequences, position ids and score weights.

    Left padding puts every verbalizer at the end of its row, so the last ``L + 1`` positions hold all
    scored logits; position ids count real tokens only, so a row scores the same in any batch.
    """
    verbs = verbalizer_ids(tokenizer, params)
    width = max(len(v) for v in verbs)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    weights = torch.zeros(len(verbs), width)  # (C, L)
    for c, v in enumerate(verbs):
        weights[c, width - len(v) :] = 1.0 if params.score == "sum" else 1.0 / len(v)

    def collate(rows: list[dict[str, Any]]) -> dict[str, Any]:
        seqs = [list(row["input_ids"]) + v for row in rows for v in verbs]
        longest = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), longest), pad, dtype=torch.long)
        mask = torch.zeros((len(seqs), longest), dtype=torch.long)
        for i, seq in enumerate(seqs):
            ids[i, longest - len(seq) :] = torch.tensor(seq)
            mask[i, longest - len(seq) :] = 1
        batch = {
            "input_ids": ids,
            "attention_mask": mask,
            "position_ids": (mask.cumsum(-1) - 1).clamp(min=0),
            "logits_to_keep": width + 1,
            "score_weights": weights.expand(len(rows), -1, -1).clone(),  # (B, C, L)
        }
        if "labels" in rows[0]:
            batch["class_labels"] = torch.tensor([row["labels"] for row in rows])
        return batch

    return collate


def label_scores(outputs: Any, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """(B, C) per-label scores: weighted log-probabilities of each label's verbalizer tokens."""
    weights = batch["score_weights"]  # (B, C, L)
    n_labels, width = weights.shape[1], weights.shape[2]
    logits = outputs.logits[:, -(width + 1) : -1].float()  # (B*C, L, V): position t predicts token t+1
    targets = batch["input_ids"][:, -width:]  # (B*C, L)
    logp = logits.log_softmax(-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)  # (B*C, L)
    return {"logits": (logp.view(-1, n_labels, width) * weights).sum(-1)}  # (B, C)


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
    fit=fit,
    check_model=check_model,
    few_shot=True,
    zero_shot=True,
    serve_schema=classification.TASK.serve_schema,  # labels + probabilities, as classification
    why_no_logits=(
        "its label scores are verbalizer log-likelihoods read from a causal LM's vocabulary logits"
    ),
)
