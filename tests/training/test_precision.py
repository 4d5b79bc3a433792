"""Precision is chosen from what the device supports, never assumed."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from accelerate.state import AcceleratorState

from tunelab.config import TrainConfig
from tunelab.errors import ConfigError
from tunelab.models.run_info import CPU_BF16_ENV, cpu_has_native_bf16, cpu_info
from tunelab.training import build_accelerator, resolve_precision

needs_cpu_only = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only rules")


def test_cpu_bf16_detection_reads_cpu_flags(tmp_path: Path, monkeypatch):
    monkeypatch.delenv(CPU_BF16_ENV)  # the suite pins it; the flags decide without it
    (tmp_path / "with").write_text("model name\t: Some CPU\nflags\t: fpu avx2 avx512_bf16\n")
    (tmp_path / "amx").write_text("flags\t: fpu avx2 amx_bf16 amx_tile\n")
    (tmp_path / "without").write_text("flags\t: fpu avx2 avx512f\n")
    assert cpu_has_native_bf16(tmp_path / "with")
    assert cpu_has_native_bf16(tmp_path / "amx")
    assert not cpu_has_native_bf16(tmp_path / "without")
    assert not cpu_has_native_bf16(tmp_path / "missing")
    assert cpu_info(tmp_path / "with") == {
        "cpu": "Some CPU",
        "flags": {"avx2": True, "avx512f": False, "avx512_bf16": True, "amx_bf16": False},
    }


@pytest.fixture
def fresh_accelerate_state():
    """accelerate keeps one process-wide state whose precision cannot change; start and leave clean."""
    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


@needs_cpu_only
@pytest.mark.parametrize(("native", "expected"), [("1", "bf16"), ("0", "no")])
def test_auto_is_bf16_autocast_exactly_on_cpus_with_native_bf16(
    monkeypatch, fresh_accelerate_state, native, expected
):
    monkeypatch.setenv(CPU_BF16_ENV, native)
    assert resolve_precision("auto") == expected
    assert resolve_precision("fp32") == "no"
    assert (
        build_accelerator(TrainConfig(output_dir=Path("unused"), precision="auto")).mixed_precision
        == expected
    )


def test_a_bad_override_is_refused_with_the_variable(monkeypatch):
    monkeypatch.setenv(CPU_BF16_ENV, "yes")
    with pytest.raises(ConfigError, match=f"{CPU_BF16_ENV}='yes': use 0"):
        cpu_has_native_bf16()


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
