"""Words of token classification: raw-text splitting, whether it finds the train words, the baseline.

:func:`split_words` keeps character offsets so predicted entities point into the input text. CJK
characters are one word each, so a character-level model (Chinese NER) aligns one tag per character.
Train words of a script written without spaces that are longer than that (Japanese or Chinese words
from a segmenter, Thai words) cannot be found again in raw text: :func:`unspaced_text` measures it at
fit and :func:`raw_words` then refuses such text, saying how to pass the words instead.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np

from tunelab.errors import DataError

LONG_WORD_SHARE = 0.05  # unspaced-script train words longer than a character: above it, refuse raw text
_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
# Scripts written without spaces between words: CJK, Thai, Lao, Myanmar, Khmer.
_UNSPACED = re.compile(f"[{_CJK}\u0e00-\u0eff\u1000-\u109f\u1780-\u17ff]")
# One CJK character; or a run of other word characters (with a leading @/# and inner ' - .); or one
# other non-space character: close to how tweets and news are tokenised in CoNLL files.
_WORD = re.compile(rf"[{_CJK}]|[@#]?[^\W{_CJK}]+(?:['’\-.][^\W{_CJK}]+)*|[^\w\s]")


def split_words(text: str) -> tuple[list[str], list[tuple[int, int]]]:
    """Raw text -> words and their character spans (CJK: one character per word)."""
    matches = list(_WORD.finditer(text))
    return [m.group() for m in matches], [m.span() for m in matches]


def unspaced_text(tokens: Sequence[Sequence[str]]) -> Literal["split", "refuse"]:
    """``split`` when raw text splits into the train words of scripts written without spaces, else ``refuse``.

    :func:`split_words` makes each CJK character a word and cannot segment Thai; train words there
    that are not single CJK characters (over 5% of them) come from a segmenter tunelab does not have.
    """
    words = [w for sentence in tokens for w in sentence if _UNSPACED.search(w)]
    longer = sum(not (len(w) == 1 and re.match(f"[{_CJK}]", w)) for w in words)
    return "refuse" if longer > LONG_WORD_SHARE * len(words) else "split"


def frequency_lexicon(tokens: Sequence[Sequence[str]], tags: Sequence[Sequence[str]]) -> dict[str, str]:
    """Most frequent tag of each train token (exact form, and lowercased as a fallback key).

    Only the entries :func:`lexicon_tags` needs are kept (a word tagged ``O`` is left out unless its
    lowercase key has an entity tag), so the saved params hold entity words, not the vocabulary.
    """
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    for words, word_tags in zip(tokens, tags, strict=True):
        for word, tag in zip(words, word_tags, strict=True):
            counts[word][tag] += 1
            counts[word.lower()][tag] += 1
    best = {word: c.most_common(1)[0][0] for word, c in counts.items()}
    return {w: tag for w, tag in best.items() if tag != "O" or best.get(w.lower(), "O") != "O"}


def lexicon_tags(lexicon: Mapping[str, str], words: Sequence[str]) -> list[str]:
    """The baseline tagger: each word's most frequent train tag, ``O`` for unseen words."""
    return [lexicon.get(w, lexicon.get(w.lower(), "O")) for w in words]


def unspaced_refusal(text: str, unspaced: str | None) -> str | None:
    """Why raw ``text`` cannot be split as training split its words (``unspaced`` is ``refuse``), or None."""
    found = _UNSPACED.search(text)
    if found is None or unspaced != "refuse":
        return None
    return (
        f"raw text in a script written without spaces ({found.group()!r}) cannot be split into the words "
        "this model was trained on (its training words there are longer than one character). Split it as "
        "the training data was and pass the words: `tunelab predict MODEL --tokens` (words separated by "
        'spaces) or {"tokens": [[...]]} in the /v1/predict body'
    )


def raw_words(text: str, unspaced: str | None, row: int) -> list[str]:
    """Words of raw ``text`` (:func:`split_words`); refused when ``unspaced`` (the params') is ``refuse``.

    Raises:
        DataError: :func:`unspaced_refusal` gives a reason; the message says how to pass words.
    """
    why = unspaced_refusal(text, unspaced)
    if why is not None:
        raise DataError(f"input {row + 1}: {why}")
    return split_words(text)[0]


def token_spans(words: Sequence[str]) -> list[tuple[int, int]]:
    """Character spans of ``words`` in ``" ".join(words)``."""
    starts = np.cumsum([0, *(len(w) + 1 for w in words[:-1])])
    return [(int(start), int(start) + len(w)) for start, w in zip(starts, words, strict=True)]
