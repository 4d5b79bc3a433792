"""Precision is chosen from what the device supports, never assumed."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tunelab.errors import ConfigError
from tunelab.training import cpu_has_native_bf16, resolve_precision

needs_cpu_only = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only rules")


def test_cpu_bf16_detection_reads_cpu_flags(tmp_path: Path):
    (tmp_path / "with").write_text("flags\t: fpu avx2 avx512_bf16\n")
    (tmp_path / "without").write_text("flags\t: fpu avx2\n")
    assert cpu_has_native_bf16(tmp_path / "with")
    assert not cpu_has_native_bf16(tmp_path / "without")


@needs_cpu_only
def test_auto_and_fp32_mean_no_autocast_on_cpu():
    assert resolve_precision("auto") == "no"
    assert resolve_precision("fp32") == "no"


@needs_cpu_only
def test_fp16_on_cpu_is_refused_with_the_key():
    with pytest.raises(ConfigError, match=r"train\.precision: fp16"):
        resolve_precision("fp16")


@needs_cpu_only
def test_bf16_on_cpu_without_native_support_is_refused(monkeypatch):
    monkeypatch.setattr("tunelab.training.cpu_has_native_bf16", lambda: False)
    with pytest.raises(ConfigError, match=r"train\.precision: this CPU has no native bf16"):
        resolve_precision("bf16")
    monkeypatch.setattr("tunelab.training.cpu_has_native_bf16", lambda: True)
    assert resolve_precision("bf16") == "bf16"
