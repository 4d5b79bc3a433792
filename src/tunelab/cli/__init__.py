"""Command line: the only place that wires the layers together and turns errors into exit codes.

``app`` is the ``tunelab`` entry point; each module registers its commands on it when imported, in
the order ``tunelab --help`` lists them.
"""

# isort: off
from tunelab.cli import train, models, serve, monitor, data, label, ui, apps, assistant
from tunelab.cli.common import app

# isort: on

__all__ = ["app", "apps", "assistant", "data", "label", "models", "monitor", "serve", "train", "ui"]
