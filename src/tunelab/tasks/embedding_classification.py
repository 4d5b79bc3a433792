"""Few- and zero-shot classification with a sentence encoder: contrastive pairs + a light head (SetFit-style).

The model embeds a text as the L2-normalised mean of its token vectors (sentence-transformers'
recipe, e.g. all-MiniLM-L6-v2) and classifies with a linear head on that embedding. The head starts
as the embeddings of each label's description times ``scale``, so before any training the logits are
scaled cosine similarities between text and label descriptions: zero-shot classification
(``data.k_shot: 0``).

Training follows SetFit (Tunstall et al. 2022, "Efficient Few-Shot Learning Without Prompts"), written
on tunelab's loop rather than imported: the train split becomes sentence pairs drawn from the K-shot
rows (same label: cosine target 1, different: 0; ``contrastive_pairs``), and the encoder learns with
the cosine-similarity MSE loss (stage 1). The head learns with cross-entropy on *detached* embeddings,
so it is a logistic regression on the encoder's features that never shapes the encoder (stage 2);
unlike SetFit it trains alongside stage 1 in the same loop instead of after it. AdamW steps are
scale-free, so the head's weight is stored divided by ``head_lr_multiplier`` and multiplied back in
the forward: the head moves that many times faster than the encoder without a second optimizer.

Hand-written because the pairing, the two losses and the description-initialised head are what SetFit
itself implements; tunelab trains them under its own loop and methods.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import datasets
import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field

from tunelab.config import DataConfig
from tunelab.data import TaskData, load_labeled_data
from tunelab.models.architectures import MeanPoolingClassifier
from tunelab.tasks import classification
from tunelab.tasks.classification.schema import LABEL_SCHEMA
from tunelab.tasks.spec import Batch, Features, TaskSpec

PAIR = "pair_"  # prefix of the second text's columns in a training pair row


class Params(BaseModel):
    """Options of the embedding_classification task (validated from ``task.params``).

    ``descriptions`` and ``scale`` set the zero-shot head; ``pairs_per_example`` and
    ``head_lr_multiplier`` shape the two SetFit-style training stages (module docstring).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    labels: list[str] | None = Field(
        default=None, min_length=2, description="Label names in id order; default: sorted train labels."
    )
    descriptions: dict[str, str] | None = Field(
        default=None, description="Label -> text its embedding is compared with; default: the label name."
    )
    max_length: int = Field(default=128, gt=0, le=8192, description="Truncate inputs to this many tokens.")
    pairs_per_example: int = Field(
        default=5,
        gt=0,
        description="Training pairs per K-shot row and kind (positive, negative); SetFit's R.",
    )
    scale: float = Field(default=20.0, gt=0, description="Logits = scale * cosine at the zero-shot start.")
    head_lr_multiplier: float = Field(
        default=100.0, gt=0, description="How many times faster the head learns than the encoder."
    )


def contrastive_pairs(labels: Sequence[str], per_example: int, seed: int) -> list[tuple[int, int, float]]:
    """SetFit's pair sampling: per row and round, one same-label and one other-label partner.

    Returns (row, partner, target) with target 1.0 (same label) or 0.0, positives and negatives equal
    in number. A label's only row pairs with itself as its positive. Pure and seeded.
    """
    rng = np.random.default_rng(seed)
    by_label: dict[str, list[int]] = {}
    for i, label in enumerate(labels):
        by_label.setdefault(label, []).append(i)
    pairs = []
    for _ in range(per_example):
        for i, label in enumerate(labels):
            same = [j for j in by_label[label] if j != i] or [i]
            other = [j for j in range(len(labels)) if labels[j] != label]
            pairs.append((i, int(rng.choice(same)), 1.0))
            if other:
                pairs.append((i, int(rng.choice(other)), 0.0))
    return pairs


def load_data(cfg: DataConfig, params: Params, seed: int) -> TaskData:
    """Checked single-label tables; the train split (after ``data.k_shot``) becomes contrastive pairs."""
    data = load_labeled_data(cfg, params.labels, seed)
    texts, labels = data.train["text"], data.train["label"]
    pairs = contrastive_pairs(labels, params.pairs_per_example, seed)
    columns = {
        "text": [texts[i] for i, _, _ in pairs],
        "label": [labels[i] for i, _, _ in pairs],
        f"{PAIR}text": [texts[j] for _, j, _ in pairs],
        f"{PAIR}label": [labels[j] for _, j, _ in pairs],
        "target": [target for _, _, target in pairs],
    }
    train = datasets.Dataset.from_dict(columns) if pairs else data.train
    return TaskData(train=train, dev=data.dev, test=data.test, labels=data.labels)


def fit(params: Params, train: Any, labels: Sequence[str]) -> Params:
    """Label order and every label's description made explicit (they decide the zero-shot head)."""
    descriptions = classification.label_texts("descriptions", params.descriptions, labels)
    return params.model_copy(update={"labels": list(labels), "descriptions": descriptions})


def model_config(params: Params) -> dict[str, Any]:
    """What the model needs to build its zero-shot head, saved in config.json."""
    return {
        "label_descriptions": dict(params.descriptions or {}),
        "similarity_scale": params.scale,
        "head_lr_multiplier": params.head_lr_multiplier,
    }


def preprocess(batch: Batch, tokenizer: Any, params: Params, label2id: Mapping[str, int]) -> Features:
    """Tokenise the text (and a pair row's partner text); labels become ids."""
    out: Features = dict(tokenizer(batch["text"], truncation=True, max_length=params.max_length))
    if "label" in batch:
        out["labels"] = [label2id[label] for label in batch["label"]]
    if f"{PAIR}text" in batch:
        pair = tokenizer(batch[f"{PAIR}text"], truncation=True, max_length=params.max_length)
        out.update({f"{PAIR}{key}": value for key, value in pair.items()})
        out[f"{PAIR}labels"] = [label2id[label] for label in batch[f"{PAIR}label"]]
        out["pair_targets"] = batch["target"]
    return out


def collator(tokenizer: Any, params: Params) -> Any:
    """Pads rows; a batch of B pairs becomes 2B rows (all first texts, then all partners) + B targets.

    Stacking both sides runs one encoder forward per batch, and every method sees plain
    ``input_ids``/``attention_mask``/``labels`` rows.
    """

    def collate(rows: list[dict[str, Any]]) -> dict[str, Any]:
        model_keys = [key for key in rows[0] if key not in ("example_id", "pair_targets")]
        firsts = [{k: row[k] for k in model_keys if not k.startswith(PAIR)} for row in rows]
        partners = [{k[len(PAIR) :]: row[k] for k in model_keys if k.startswith(PAIR)} for row in rows]
        batch = dict(tokenizer.pad(firsts + [p for p in partners if p], return_tensors="pt"))
        if "pair_targets" in rows[0]:
            batch["pair_targets"] = torch.tensor([row["pair_targets"] for row in rows], dtype=torch.float)
        return batch

    return collate


def loss(
    outputs: Any, batch: Mapping[str, torch.Tensor], params: Params, label_smoothing: float = 0.0
) -> torch.Tensor:
    """Head cross-entropy (on detached embeddings) + cosine-similarity MSE of the pairs (the encoder's)."""
    head = F.cross_entropy(outputs.logits, batch["labels"], label_smoothing=label_smoothing)
    if "pair_targets" not in batch:
        return head
    n = batch["pair_targets"].shape[0]
    cosine = (outputs.embeddings[:n] * outputs.embeddings[n:]).sum(-1)  # unit vectors: dot = cosine
    return head + F.mse_loss(cosine, batch["pair_targets"])


TASK = TaskSpec(
    name="embedding_classification",
    params=Params,
    model_class=MeanPoolingClassifier,
    head_modules=("classifier",),
    metric_names=("accuracy", "macro_f1", "micro_f1"),
    load_data=load_data,
    read_eval=classification.read_single_label,
    preprocess=preprocess,
    collator=collator,
    postprocess=classification.predict_single_label,
    metrics=classification.metrics,
    target_keys=("labels", "pair_targets"),
    loss=loss,
    fit=fit,
    model_config=model_config,
    few_shot=True,
    zero_shot=True,
    serve_schema=LABEL_SCHEMA,  # labels + probabilities, as classification
    own_architecture=True,
)
