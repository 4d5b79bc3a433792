"""Inference: a saved model bound to its task, batched no-grad prediction, and the one generation path."""
