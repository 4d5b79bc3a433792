"""The web console (``tunelab ui``): runs table, live curves, comparisons, starting runs, a playground.

Above ``workflows`` and beside ``tuning`` and ``reproduce``: it reads run dirs, validates a config as
``train`` does (``training.plan.resolve``) and starts ``tunelab train`` in a subprocess; with ``serving``
it is the only package that imports fastapi/uvicorn (serving's ``ApiKeyMiddleware`` guards the API).
"""
