"""Explanations rendered for people: HTML with coloured word spans, and a PNG bar chart per target.

Pure functions: explanation dicts (``tasks.schemas.Explanation``) in, HTML text or PNG bytes out; the
caller writes them (atomically). Every piece of the input text is HTML-escaped, so a text holding
markup (``<script>``) is shown, never run. Green marks words that raise the target's probability, red
words that lower it (rollout scores are never negative); the colour's strength is the score relative
to the largest absolute score of that explanation.
"""

from __future__ import annotations

import html
import io
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

POSITIVE, NEGATIVE = (22, 163, 74), (220, 38, 38)  # green, red (RGB)


def _title(explanation: Mapping[str, Any], words: Sequence[Mapping[str, Any]]) -> str:
    where = (
        ""
        if explanation["word"] is None
        else f" at word {explanation['word']} ({words[explanation['word']]['text']})"
    )
    return f"{explanation['target']}{where}: p = {explanation['probability']:.3f}, {explanation['method']}"


def _colour(score: float, peak: float) -> str:
    red, green, blue = POSITIVE if score >= 0 else NEGATIVE
    alpha = abs(score) / peak if peak > 0 else 0.0
    return f"rgba({red}, {green}, {blue}, {alpha:.2f})"


def explanation_html(text: str, explanations: Sequence[Mapping[str, Any]]) -> str:
    """A standalone HTML page: per explanation, ``text`` with each explained word on its colour.

    ``text`` is the text the words' character spans index (a pre-split input: its words joined by
    spaces); the characters between words are kept as they are.
    """
    sections = []
    for explanation in explanations:
        words = explanation["words"]
        peak = max((abs(w["score"]) for w in words), default=0.0)
        parts, at = [], 0
        for w in words:
            parts.append(html.escape(text[at : w["start"]]))
            parts.append(
                f'<span style="background:{_colour(w["score"], peak)}" title="{w["score"]:+.4f}">'
                f"{html.escape(text[w['start'] : w['end']])}</span>"
            )
            at = w["end"]
        parts.append(html.escape(text[at:]))
        sections.append(f"<h2>{html.escape(_title(explanation, words))}</h2>\n<p>{''.join(parts)}</p>")
    body = "\n".join(sections) or "<p>nothing to explain (no target in this input)</p>"
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>tunelab explanation</title>'
        "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto;line-height:2}"
        "span{padding:0.1em 0.15em;border-radius:0.2em}</style></head>\n<body>\n"
        f"{body}\n</body></html>\n"
    )


def explanation_png(explanations: Sequence[Mapping[str, Any]]) -> bytes:
    """PNG bytes: one bar chart of word scores (in text order) per explanation, titled by its target."""
    n = max(1, len(explanations))
    longest = max((len(e["words"]) for e in explanations), default=1)
    fig, axes = plt.subplots(n, 1, figsize=(max(6.0, 0.45 * longest + 1.5), 2.8 * n), squeeze=False)
    for ax, explanation in zip(axes[:, 0], explanations, strict=False):
        words = explanation["words"]
        scores = [w["score"] for w in words]
        colours = ["#16a34a" if s >= 0 else "#dc2626" for s in scores]
        ax.bar(range(len(words)), scores, color=colours)
        # parse_math off: the input's own text is shown as it is ("$x$" would be mathtext, "$^$" an error)
        ax.set_xticks(
            range(len(words)), [w["text"] for w in words], rotation=60, ha="right", parse_math=False
        )
        ax.axhline(0, color="black", linewidth=0.6)
        ax.set_ylabel("attribution")
        ax.set_title(_title(explanation, words), fontsize=10, parse_math=False)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return buffer.getvalue()
