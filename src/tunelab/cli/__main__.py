"""``python -m tunelab.cli``: what torchrun and subprocess tests launch."""

from tunelab.cli import app

app()
