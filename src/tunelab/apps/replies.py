"""How good the assistant's replies are: each path's replies scored against held-out reference answers.

For every held-out question the assistant's decision gives the reply it sends (a stored answer, the
generator's reply or the handoff message). Each reply is scored against the question's reference
answers by chrF (sacrebleu's character n-gram F-score, 0-100; the best over the question's
references), which reads English and Chinese alike and gives partial credit to a reply that is close
but not word for word, and by exact match (the reply is one of the references, spaces at the ends
ignored). Beside the sent reply, the same questions are scored with what the other paths would have
said: the best stored answer whatever its score, the handoff message, and the generator's reply when
there is a generator, so each path is compared with its alternatives on the questions it took.
"""

from __future__ import annotations

from collections.abc import Sequence
from statistics import fmean
from typing import Any, get_args

from tunelab.apps.assistant import Decision, Route
from tunelab.inference.continuous import decode_jobs
from tunelab.inference.generate import GenerationOptions
from tunelab.tasks.causal_lm import chat_prompt


def generate_replies(
    model: Any, tokenizer: Any, questions: Sequence[str], max_new_tokens: int, max_rows: int
) -> list[str]:
    """The generator's greedy reply to each question asked alone, prompted as ``tunelab serve`` prompts it."""
    options = GenerationOptions(max_new_tokens=max_new_tokens)
    jobs = [options.job(chat_prompt(tokenizer, [{"role": "user", "content": q}])) for q in questions]
    return [g.text for g in decode_jobs(model, tokenizer, jobs, max_rows)]


def score_replies(replies: Sequence[str], references: Sequence[Sequence[str]]) -> dict[str, list[float]]:
    """Per reply: ``chrf`` (best over its references, 0-100) and ``exact`` (1.0 if it is one of them)."""
    from sacrebleu.metrics.chrf import CHRF  # imported here: only the evaluation needs it

    chrf = CHRF()
    pairs = list(zip(replies, references, strict=True))
    return {
        "chrf": [chrf.sentence_score(reply, list(refs)).score for reply, refs in pairs],
        "exact": [float(reply.strip() in {r.strip() for r in refs}) for reply, refs in pairs],
    }


def reply_quality(
    decisions: Sequence[Decision],
    references: Sequence[Sequence[str]],
    handoff_message: str,
    generated: Sequence[str] | None,
) -> dict[str, Any]:
    """Mean chrF and exact-match share of each reply source, over all questions and per path taken.

    Returns ``{group: {"questions": n, source: {"chrf": mean, "exact": share}}}`` for the groups
    ``all``, ``answer``, ``generator`` and ``handoff`` (the questions the assistant sent that way; a
    group without questions has None for its means) and the sources ``sent`` (the reply the assistant
    sends), ``best_stored``, ``handoff`` and, given ``generated`` (one reply per question),
    ``generator``.
    """
    if generated is None and any(d.path == "generator" for d in decisions):
        raise ValueError("a decision routes to the generator, so its generated replies are needed")
    sources = {"best_stored": [str(d.candidates[0]["text"]) for d in decisions]}
    sources["handoff"] = [handoff_message] * len(decisions)
    if generated is not None:
        sources["generator"] = list(generated)
    sent = [d.reply if d.reply is not None else sources["generator"][i] for i, d in enumerate(decisions)]
    scores = {name: score_replies(texts, references) for name, texts in {"sent": sent, **sources}.items()}
    groups = {"all": list(range(len(decisions)))}
    groups |= {path: [i for i, d in enumerate(decisions) if d.path == path] for path in get_args(Route)}
    return {
        group: {
            "questions": len(rows),
            **{
                source: {m: fmean(v[i] for i in rows) if rows else None for m, v in metrics.items()}
                for source, metrics in scores.items()
            },
        }
        for group, rows in groups.items()
    }
