"""Task registry: one line per task module."""

from __future__ import annotations

from tunelab.registry import Registry
from tunelab.tasks import (
    causal_lm,
    classification,
    embedding_classification,
    image_classification,
    image_mim,
    lm_pretrain,
    prompt_classification,
    qa,
    retrieval,
    seq2seq,
    token_classification,
)
from tunelab.tasks.spec import TaskSpec

TASKS: Registry[TaskSpec] = Registry(
    "task",
    {
        classification.TASK.name: classification.TASK,
        causal_lm.TASK.name: causal_lm.TASK,
        lm_pretrain.TASK.name: lm_pretrain.TASK,
        token_classification.TASK.name: token_classification.TASK,
        qa.TASK.name: qa.TASK,
        seq2seq.TASK.name: seq2seq.TASK,
        prompt_classification.TASK.name: prompt_classification.TASK,
        embedding_classification.TASK.name: embedding_classification.TASK,
        retrieval.TASK.name: retrieval.TASK,
        image_classification.TASK.name: image_classification.TASK,
        image_mim.TASK.name: image_mim.TASK,
    },
)
