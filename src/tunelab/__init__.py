"""tunelab: from a pretrained transformer to a trained, evaluated, exported and served model."""

__version__ = "0.1.0"
