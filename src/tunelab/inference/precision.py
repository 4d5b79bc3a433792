"""Inference precision: the dtype a served model's calls autocast to, and its linears stored in it.

Serving-side choices on top of torch's autocast (training takes its precision from accelerate):
``auto`` is bf16 where the device runs it natively and the model is not int8, and the linear weights
are then kept in bf16 so autocast does not cast them again on every call.
"""

from __future__ import annotations

import torch

from tunelab.errors import ConfigError
from tunelab.models.int8 import is_int8
from tunelab.models.run_info import cpu_has_native_bf16


def inference_autocast(precision: str, device: torch.device, model: torch.nn.Module) -> torch.dtype | None:
    """The dtype model calls autocast to for ``precision`` (auto | fp32 | bf16); None = plain fp32.

    Why bf16 by default where native: MiniLM served Rotten Tomatoes reviews at up to 1.5x fp32's
    requests/s with the same labels on 256 test rows (bench/RESULTS.md, "Serving benchmark").
    Without bf16 instructions a CPU runs it ~100x slower, and an int8 model has its own kernels, so
    auto keeps fp32 there.

    Raises:
        ConfigError: bf16 asked for on a device without native bf16.
    """
    if precision == "fp32":
        return None
    native = torch.cuda.is_bf16_supported() if device.type == "cuda" else cpu_has_native_bf16()
    if precision == "bf16" and not native:
        raise ConfigError(
            "precision: bf16 needs a CPU with avx512_bf16/amx_bf16 or a bf16 GPU, which this is not; "
            "use auto or fp32"
        )
    if precision == "auto" and (not native or is_int8(model)):
        return None
    return torch.bfloat16


def store_linears_as(model: torch.nn.Module, dtype: torch.dtype) -> None:
    """Keep every ``nn.Linear`` weight in ``dtype``, except one tied to an embedding (kept as it is).

    Why: autocast casts each fp32 weight again in every call (its cast cache lives for one autocast
    context), which for a few short inputs costs about as much as the matmuls themselves. LayerNorm
    and embeddings stay fp32, and autocast still runs them in fp32, so only the matmuls lose
    precision (the same labels as fp32 on the serving bench's 256 check rows).
    """
    tied = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Embedding)}
    for module in model.modules():
        if isinstance(module, torch.nn.Linear) and id(module.weight) not in tied:
            module.to(dtype)
