"""``tunelab serve --workers N``: N model processes behind one port, on uvicorn's own multi-worker mode.

The parent checks the settings and the exposure, binds the port, and starts N workers that each
build the app through :func:`worker_app` (an import string, as uvicorn's workers need) with their
own model, batchers and torch threads. Settings reach them through the ``TUNELAB_SERVE_*``
environment; metrics through a private ``PROMETHEUS_MULTIPROC_DIR`` that the parent creates and
removes. On SIGTERM uvicorn's supervisor forwards the signal, each worker drains like a single
process would, and the parent exits once they all have.
"""

from __future__ import annotations

import logging
import os
import signal
import tempfile
from types import FrameType

import uvicorn
from fastapi import FastAPI
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors import Multiprocess

from tunelab.errors import ServingError
from tunelab.serving.settings import ServeSettings, check_exposure, load_api_keys, load_settings

logger = logging.getLogger(__name__)

WORKER_APP = "tunelab.serving.workers:worker_app"


def available_cores() -> int:
    """CPUs this process may run on (a container's or taskset's limit, not the machine's count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def threads_per_worker(settings: ServeSettings, workers: int, cores: int) -> int:
    """The torch threads of each worker: the explicit setting, else an equal share of the cores (at least 1).

    N workers each taking torch's default (every core) would oversubscribe the CPU N times over.
    """
    return settings.torch_threads or max(1, cores // workers)


def worker_environment(settings: ServeSettings, threads: int) -> dict[str, str]:
    """The ``TUNELAB_SERVE_*`` variables that make a worker's settings equal the parent's.

    Only what the command line may have set; every other setting already comes from the environment
    the workers inherit (keys included, so none is written anywhere).
    """
    return {
        "TUNELAB_SERVE_MODEL_DIR": settings.model_dir,
        "TUNELAB_SERVE_HOST": settings.host,
        "TUNELAB_SERVE_PORT": str(settings.port),
        "TUNELAB_SERVE_ALLOW_UNAUTHENTICATED": str(settings.allow_unauthenticated).lower(),
        "TUNELAB_SERVE_TORCH_THREADS": str(threads),
        **({"TUNELAB_SERVE_SAFETY": settings.safety.model_dump_json()} if settings.safety else {}),
    }


def worker_app() -> FastAPI:
    """A worker's app, from the environment the parent prepared (uvicorn calls it in each worker).

    Trusts ``TUNELAB_SERVE_HOST`` for the exposure check, unlike ``app_from_env``: the parent bound
    exactly that host and exported it. Meant only for :func:`run_workers`.
    """
    from tunelab.assets import hub_offline
    from tunelab.log import setup_json_lines, setup_logging
    from tunelab.serving.app import app_from_settings

    setup_logging("INFO")  # a spawned worker starts with no logging configured
    setup_json_lines("tunelab.serving.access")
    hub_offline()
    try:
        settings = load_settings()
        return app_from_settings(settings, bind_host=settings.host)
    except Exception:
        logger.exception("worker %d failed to start", os.getpid())
        # uvicorn restarts a worker that dies, forever, unless it exits with STARTUP_FAILURE: then it
        # stops them all and run_workers reports the failure.
        raise SystemExit(STARTUP_FAILURE) from None


def _exit_cleanly(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


class _WorkerConfig(uvicorn.Config):
    """uvicorn's config, plus the SIGTERM handler each worker needs to exit 0 after draining.

    A worker's uvicorn re-raises SIGTERM after its graceful shutdown with the handler that was in
    place before it started, and a spawned process has the default one (death by signal). uvicorn
    calls ``configure_logging`` first thing in every worker, before the server starts: the one hook
    that runs there early enough, so the handler is installed in it.
    """

    def configure_logging(self) -> None:
        """Set up uvicorn's logging, then install the worker's SIGTERM handler."""
        super().configure_logging()
        signal.signal(signal.SIGTERM, _exit_cleanly)


def run_workers(settings: ServeSettings, workers: int) -> None:
    """Serve with ``workers`` processes until SIGTERM/SIGINT; returns once every worker has exited.

    Raises:
        ServingError: the settings expose the model without a key, or a worker exited with an error
            (e.g. the model failed to load: uvicorn then stops the others).
    """
    check_exposure(settings, len(load_api_keys(settings)), settings.host)
    cores = available_cores()
    threads = threads_per_worker(settings, workers, cores)
    logger.info(
        "%d workers x %d torch threads (%s; %d cores available)",
        workers,
        threads,
        "torch_threads" if settings.torch_threads else "an equal share of the cores",
        cores,
    )
    os.environ.update(worker_environment(settings, threads))
    with tempfile.TemporaryDirectory(prefix="tunelab-metrics-") as metrics_dir:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir  # the workers inherit it when spawned
        try:
            config = _WorkerConfig(
                WORKER_APP,
                factory=True,
                host=settings.host,
                port=settings.port,
                workers=workers,
                log_config=None,
                access_log=False,  # AccessLogMiddleware writes the structured line
                server_header=False,
                timeout_graceful_shutdown=settings.drain_timeout_s,
            )
            # What uvicorn.run does for workers > 1, with our config class instead of its own.
            sock = config.bind_socket()
            supervisor = Multiprocess(config, sockets=[sock])
            supervisor.run()
            sock.close()
        finally:
            del os.environ["PROMETHEUS_MULTIPROC_DIR"]
    failed = {p.pid: p.exitcode for p in supervisor.processes if p.exitcode != 0}
    if failed:
        raise ServingError(f"worker processes exited with errors (pid: exit code): {failed}; see the log")
