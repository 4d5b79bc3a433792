"""Test-only hook, imported at start-up by every Python process with this directory on PYTHONPATH.

With ``TUNELAB_TEST_KILL=RANK:STEP`` a worker of that rank SIGKILLs itself just after the loop's
optimizer step STEP, in the first attempt only (``TORCHELASTIC_RESTART_COUNT`` 0), so a restarted
group runs through. It lets the tests kill a rank of a real ``tunelab train --nproc`` launch.
"""

from __future__ import annotations

import os

_SPEC = os.environ.get("TUNELAB_TEST_KILL")
if _SPEC and "RANK" in os.environ and os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") == "0":
    _RANK, _STEP = (int(part) for part in _SPEC.split(":"))
    if int(os.environ["RANK"]) == _RANK:
        import signal

        from tunelab.training import loop

        _step = loop.TrainingRun.optimizer_step

        def _optimizer_step_then_die(self: loop.TrainingRun, group: list[list[int]]) -> None:
            _step(self, group)
            if self.state.step == _STEP:
                os.kill(os.getpid(), signal.SIGKILL)

        loop.TrainingRun.optimizer_step = _optimizer_step_then_die  # type: ignore[method-assign]
