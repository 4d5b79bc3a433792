"""Start N local worker processes through torch's elastic launcher (what ``torchrun --standalone`` runs).

Not a home-made spawner: torchelastic's agent starts the workers, sets their rank variables, stops
every worker as soon as one fails (so a killed rank cannot leave its peers hanging in a
collective), restarts the group up to ``max_restarts`` times and reports which rank failed how.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Sequence

from torch.distributed.elastic.multiprocessing import DefaultLogsSpecs, SignalException
from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
from torch.distributed.launcher.api import LaunchConfig, elastic_launch

from tunelab.errors import TunelabError

RESTART_COUNT = "TORCHELASTIC_RESTART_COUNT"  # set by torchelastic in every worker it starts
SHARE_STORE = "TORCH_DISABLE_SHARE_RDZV_TCP_STORE"


class LaunchError(TunelabError):
    """A worker process of a multi-process run failed; the message names its rank and exit."""


def elastic_restart() -> bool:
    """True in a worker torchelastic restarted after a failure (``--max-restarts``, plain torchrun too)."""
    return int(os.environ.get(RESTART_COUNT, "0")) > 0


def failure_message(error: ChildFailedError) -> str:
    """One line naming the first failed rank and how it ended (exit code or signal)."""
    rank, failure = error.get_first_failure()
    how = (
        f"was killed by {failure.signal_name()}"
        if failure.exitcode < 0
        else f"exited with code {failure.exitcode}"
    )
    return f"rank {rank} (pid {failure.pid}) {how}; the launch stopped every other rank (its output is above)"


def launch_workers(worker_args: Sequence[str], nproc: int, max_restarts: int = 0) -> int | None:
    """Run ``python worker_args...`` in ``nproc`` local processes joined into one process group.

    The rendezvous is torchrun's ``--standalone`` one (a c10d store on a free localhost port), so
    several launches can run side by side. Raises ``LaunchError`` when a worker failed and no
    restarts are left. Returns the signal number when SIGINT/SIGTERM stopped the launch: torchelastic
    then forwarded it to the workers, which checkpoint at their next step and exit (SIGKILL after
    its 30 s shutdown timeout); None when every worker finished.
    """
    config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=nproc,
        run_id=str(uuid.uuid4()),
        rdzv_backend="c10d",
        rdzv_endpoint="localhost:0",
        max_restarts=max_restarts,
        logs_specs=DefaultLogsSpecs(log_dir=os.devnull),  # workers print to this terminal, no log files
    )
    if nproc > 1:  # torchrun's default: one intra-op thread per worker unless the user chose
        os.environ.setdefault("OMP_NUM_THREADS", "1")
    # torch 2.13 shares the rendezvous TCP store with the workers and keeps it across restarts, and the
    # workers key their process group without the attempt: a restarted gloo rank could then read a
    # dead rank's address (connectFullMesh "Connection refused", seen in 2 of 3 restart tests).
    # torch's opt-out gives every attempt a fresh store, hosted by its rank 0.
    os.environ.setdefault(SHARE_STORE, "1")
    try:
        elastic_launch(config, sys.executable)("-u", *worker_args)
    except ChildFailedError as exc:
        raise LaunchError(failure_message(exc)) from None
    except SignalException as exc:
        return int(exc.sigval)
    return None
