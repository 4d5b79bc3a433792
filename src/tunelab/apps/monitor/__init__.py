"""Sentiment/topic stream monitor (``tunelab monitor``): rolling per-topic windows, alerts on a negative jump.

``settings`` (the ``*_app.yaml`` file), ``rule`` (the pure window/alert rule), ``stream`` (JSONL lines
to batches), ``webhook`` (alert delivery), ``job`` (models + rule + outputs), ``replay`` (a news stream
with an injected negative burst, scored for alert latency and false alarms). The recipe with its
commands and measured table is ``examples/apps/monitor/``.
"""
