"""The output dir at the start of a run: fresh, resumed from a checkpoint, or refused.

``train`` and ``train --resume`` share one rule (``start_dir``), so neither silently deletes what a
user put there nor trips over what a killed run left behind.
"""

from __future__ import annotations

import logging
import re
import shutil
from pathlib import Path

from tunelab.errors import TunelabError
from tunelab.io import recover_interrupted
from tunelab.training.checkpoint import latest_checkpoint

logger = logging.getLogger(__name__)

# What a run writes into train.output_dir, and the hidden temp copies an interrupted atomic write leaves.
_RUN_ENTRY = re.compile(r"\.?(run_config\.yaml|metrics\.jsonl|tb|checkpoints|best|init)(\.(tmp|old)-\w+)?")


def _recover(out: Path) -> None:
    """Put back what a kill in the middle of a write left in the run dir, before it is resumed."""
    for parent in (out, out / "checkpoints"):
        for line in recover_interrupted(parent):
            logger.warning("%s: %s (left by an interrupted write)", parent, line)


def start_dir(out: Path, resume: bool, resume_from: Path | None, overwrite: bool, main: bool) -> Path | None:
    """The checkpoint to resume from, or None for a fresh run in an empty output dir.

    One rule for ``train`` and ``train --resume``: a dir with a checkpoint is resumed with --resume or
    replaced with --overwrite. Without a checkpoint there is nothing to resume, and the files of a run
    killed before its first checkpoint are removed, so both commands start over; anything else (files
    tunelab did not write, a finished zero-shot run's report) is deleted only with --overwrite.
    """
    if main and (resume or resume_from is not None):
        _recover(out)
    if resume and resume_from is None:
        resume_from = latest_checkpoint(out)
    if resume_from is not None or not main:
        return resume_from
    if not out.exists() or not any(out.iterdir()):
        if resume:
            logger.warning("--resume: %s holds no run to resume; starting a new one", out)
        return None
    if not overwrite:
        latest = latest_checkpoint(out)
        if latest is not None:
            raise TunelabError(
                f"{out} already holds a run (newest checkpoint {latest.name}); "
                "pass --resume to continue it or --overwrite to start over"
            )
        keep = sorted(p.name for p in out.iterdir() if not _RUN_ENTRY.fullmatch(p.name))
        if (out / "best" / "metrics.json").is_file():
            keep.append("best/metrics.json (a finished run)")
        if keep:
            raise TunelabError(
                f"{out} has no checkpoint to resume but holds {', '.join(keep)}; "
                "pass --overwrite to delete it and start over, or choose another train.output_dir"
            )
        logger.warning("%s: the run stopped before its first checkpoint; starting over", out)
    shutil.rmtree(out)
    return None
