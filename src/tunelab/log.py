"""Logging setup: stdlib logging with a rich handler, quiet on non-zero ranks."""

from __future__ import annotations

import logging

from rich.console import Console
from rich.logging import RichHandler


class _RankZeroFilter(logging.Filter):
    def __init__(self, rank: int) -> None:
        super().__init__()
        self.rank = rank

    def filter(self, record: logging.LogRecord) -> bool:
        return self.rank == 0 or record.levelno >= logging.WARNING


def setup_logging(level: str = "INFO", rank: int = 0) -> None:
    """Configure the root logger once (called by the CLI only); logs go to stderr."""
    handler = RichHandler(console=Console(stderr=True), show_path=False, rich_tracebacks=False)
    handler.addFilter(_RankZeroFilter(rank))
    logging.basicConfig(level=level.upper(), format="%(message)s", handlers=[handler], force=True)
    for noisy in ("datasets", "transformers", "accelerate", "filelock", "urllib3", "matplotlib", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def setup_json_lines(name: str) -> None:
    """Send logger ``name`` to stderr as bare lines (its messages are JSON), bypassing rich's columns."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    json_logger = logging.getLogger(name)
    json_logger.handlers = [handler]
    json_logger.propagate = False
    json_logger.setLevel(logging.INFO)
