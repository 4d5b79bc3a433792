"""A verified merge of an adapter artifact (``models.adapter``) into a plain model.

Merging uses peft's ``merge_and_unload``; what tunelab adds is the refusal: merged logits must equal
the adapter-on logits on a probe batch within a dtype-dependent tolerance, or nothing is written.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import torch

from tunelab.errors import ExportError
from tunelab.models.adapter import is_peft_model

logger = logging.getLogger(__name__)


DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
# Max |merged - unmerged| logit difference accepted per target dtype: fp32 only sees summation-order
# noise; half precisions lose ~3 (fp16) or ~2 (bf16) significant digits in every weight.
MERGE_ATOL = {"float32": 1e-4, "float16": 2e-2, "bfloat16": 1e-1}


def output_tensors(outputs: Any) -> dict[str, torch.Tensor]:
    """Every tensor of a transformers model output in fp32 (``logits``, or a QA head's start/end logits)."""
    return {name: value.float() for name, value in outputs.items() if isinstance(value, torch.Tensor)}


@torch.no_grad()
def merge_verified(
    model: torch.nn.Module, probe: Mapping[str, torch.Tensor], dtype: str
) -> tuple[Any, float]:
    """Merge the adapter into the base weights in ``dtype``; refuse unless logits match on ``probe``.

    Returns the merged plain transformers model and the max absolute difference over every output
    tensor. The adapter-on outputs are taken in fp32 before merging, since ``merge_and_unload``
    mutates the base in place.
    """
    if not is_peft_model(model):
        raise ExportError(f"--merge: a {type(model).__name__} has no adapter to merge")
    model.eval()
    reference = output_tensors(model(**probe))
    merged = model.merge_and_unload().to(DTYPES[dtype]).eval()
    got = output_tensors(merged(**probe))
    diff = max(float((got[name] - ref).abs().max()) for name, ref in reference.items())
    if not diff <= MERGE_ATOL[dtype]:
        raise ExportError(
            f"--merge: merged model differs from the adapter model by {diff:.3g} in probe outputs "
            f"(tolerance {MERGE_ATOL[dtype]:g} for {dtype}); nothing written. Try --dtype float32"
        )
    logger.info("merged adapter into %s base; max logit difference %.3g", dtype, diff)
    return merged, diff
