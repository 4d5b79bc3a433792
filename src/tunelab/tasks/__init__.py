"""Task registry: one line per task module."""

from __future__ import annotations

from tunelab.registry import Registry
from tunelab.tasks import (
    classification,
    embedding_classification,
    lm_pretrain,
    prompt_classification,
    qa,
    token_classification,
)
from tunelab.tasks.spec import TaskSpec

TASKS: Registry[TaskSpec] = Registry(
    "task",
    {
        classification.TASK.name: classification.TASK,
        lm_pretrain.TASK.name: lm_pretrain.TASK,
        token_classification.TASK.name: token_classification.TASK,
        qa.TASK.name: qa.TASK,
        prompt_classification.TASK.name: prompt_classification.TASK,
        embedding_classification.TASK.name: embedding_classification.TASK,
    },
)
