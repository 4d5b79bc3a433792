"""End-to-end fixtures: the shipped Rotten Tomatoes data prepared once, and train overrides pointing at it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tunelab.cli import app


@pytest.fixture(scope="session")
def rotten_tomatoes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``tunelab data prepare rotten-tomatoes`` output (train.csv / test.csv), shared by the e2e tests."""
    out = tmp_path_factory.mktemp("data") / "rotten-tomatoes"
    prepared = CliRunner().invoke(app, ["data", "prepare", "rotten-tomatoes", str(out)])
    assert prepared.exit_code == 0, prepared.output
    return out


@pytest.fixture
def rt_overrides(rotten_tomatoes: Path, tmp_path: Path) -> Callable[..., list[str]]:
    """``--key value`` overrides: the prepared data, subsampled, with the run in ``tmp_path / "run"``."""

    def overrides(max_train: int, max_eval: int, *extra: str) -> list[str]:
        return [
            f"--data.train_file={rotten_tomatoes / 'train.csv'}",
            f"--data.test_file={rotten_tomatoes / 'test.csv'}",
            f"--data.max_train_samples={max_train}",
            f"--data.max_eval_samples={max_eval}",
            f"--train.output_dir={tmp_path / 'run'}",
            *extra,
        ]

    return overrides
