"""Applications built from tunelab's parts: each module is one recipe's missing piece.

An app composes saved runs (``inference``), their metrics (``evaluation``) and shipped data into a job
the library has no general form for (a streaming monitor, an assistant that routes a message to an
intent model and an answer index, a recommender's evaluation). The recipes live in ``examples/apps/``.
"""
