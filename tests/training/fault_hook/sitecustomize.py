"""Test-only hook, imported at start-up by every Python process with this directory on PYTHONPATH.

With ``TUNELAB_TEST_FAULT=RANK:STEP:kill`` a worker of that rank SIGKILLs itself just after the loop's
optimizer step STEP; with ``...:hang`` it sleeps there instead (its peers wait in the next collective
until ``train.distributed.timeout_s``). Only in the first attempt (``TORCHELASTIC_RESTART_COUNT`` 0),
so a restarted group runs through. It lets the tests break a rank of a real ``tunelab train --nproc``.
"""

from __future__ import annotations

import os

_SPEC = os.environ.get("TUNELAB_TEST_FAULT")
if _SPEC and "RANK" in os.environ and os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") == "0":
    _RANK, _STEP, _FAULT = _SPEC.split(":")
    if os.environ["RANK"] == _RANK:
        import signal
        import time

        from tunelab.training import loop

        _step = loop.TrainingRun.optimizer_step

        def _optimizer_step_then_fail(self: loop.TrainingRun, group: list[list[int]]) -> None:
            _step(self, group)
            if self.state.step == int(_STEP) and _FAULT == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            if self.state.step == int(_STEP) and _FAULT == "hang":
                signal.signal(signal.SIGTERM, signal.SIG_DFL)  # the launcher's stop ends the sleeper at once
                time.sleep(3600)

        loop.TrainingRun.optimizer_step = _optimizer_step_then_fail  # type: ignore[method-assign]
