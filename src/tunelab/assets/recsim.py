"""``bbc-recsim``: SIMULATED readers of the BBC News articles, as query/positive retrieval splits.

No real reading logs ship with any package, so this module invents them, seeded, from the articles'
own structure; it is a simulation and every figure measured on it says so. The world:

- an item is an article's title and first sentence (at most ``MAX_WORDS`` words), deduplicated;
- items are grouped into stories: k-means on the TF-IDF vectors of the whole articles inside each
  BBC topic (``STORIES_PER_TOPIC`` per topic), so "co-membership" means same topic, and mostly same
  story, while a model only sees the short item texts;
- the BBC files carry no dates, so time is simulated too: a seeded ``NEW_SHARE`` of the items is
  "new" (the candidates a recommender ranks), the rest is the archive readers' histories come from;
- popularity is skewed: inside each pool an item's weight is ``1 / rank ** ZIPF`` over a seeded
  random rank, independent of its text;
- a reader has a home story (drawn in proportion to story sizes) and clicks, for each item, in their
  story with ``P_STORY``, elsewhere in its topic with ``P_TOPIC``, else anywhere, always in proportion
  to the weights: ``HISTORY`` archive items, then ``NEXT`` new items (the held-out next clicks).

The split is by reader (train, dev and test readers are different simulated people) and by time (a
history is archive items only, every positive a new item). So no history item is ever a candidate:
neither the model nor the popularity baseline has to exclude a reader's history from its ranking.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tunelab.assets.bbc import _bbc_articles

MAX_WORDS = 24
STORIES_PER_TOPIC = 10
NEW_SHARE = 0.4
ZIPF = 0.8
P_STORY, P_TOPIC = 0.75, 0.15
HISTORY, NEXT = 5, 2
READERS = {"train.jsonl": 1000, "dev.jsonl": 100, "test.jsonl": 200}
SEPARATOR = " | "  # between the history items of a query (no item text holds a "|")
SEED = 0


@dataclass(frozen=True)
class World:
    """The simulated catalogue: one entry per item in every array (N items)."""

    texts: list[str]
    topic: np.ndarray  # (N,) topic index
    story: np.ndarray  # (N,) story index, unique across topics
    new: np.ndarray  # (N,) bool: a candidate (new) item, else an archive item
    weight: np.ndarray  # (N,) popularity weight inside its pool


def item_text(raw: str) -> str:
    """An article's title and its body's first sentence, whitespace-collapsed, at most ``MAX_WORDS`` words."""
    title, _, body = raw.strip().partition("\n")
    title, body = " ".join(title.split()), " ".join(body.split())
    first = re.match(r".+?[.!?](?=\s|$)", body)
    joiner = " " if title.endswith((".", "?", "!")) else ". "
    words = f"{title}{joiner}{first.group(0) if first else body}".split()
    return " ".join(words[:MAX_WORDS])


def build_world(texts: list[str], articles: list[str], topics: list[str], seed: int = SEED) -> World:
    """Stories by k-means of the ``articles`` inside each topic, the new/archive cut and Zipf popularity.

    ``texts[i]`` is the item text of ``articles[i]``; everything random is drawn from ``seed``.
    """
    from sklearn.cluster import KMeans
    from sklearn.feature_extraction.text import TfidfVectorizer

    rng = np.random.default_rng(seed)
    names = sorted(set(topics))
    topic = np.array([names.index(t) for t in topics])
    vectors = TfidfVectorizer(stop_words="english", sublinear_tf=True, min_df=2, max_df=0.5).fit_transform(
        articles
    )
    story = np.zeros(len(texts), dtype=int)
    for t in range(len(names)):
        members = np.flatnonzero(topic == t)
        kmeans = KMeans(STORIES_PER_TOPIC, n_init=4, random_state=seed)
        story[members] = t * STORIES_PER_TOPIC + kmeans.fit_predict(vectors[members])
    new = np.zeros(len(texts), dtype=bool)
    new[rng.permutation(len(texts))[: round(NEW_SHARE * len(texts))]] = True
    weight = np.zeros(len(texts))
    for pool in (new, ~new):
        members = np.flatnonzero(pool)
        weight[members] = 1.0 / (rng.permutation(len(members)) + 1) ** ZIPF
    return World(texts, topic, story, new, weight)


def _clicks(world: World, rng: np.random.Generator, home: int, pool: np.ndarray, k: int) -> list[int]:
    """``k`` distinct items of ``pool`` a reader of story ``home`` clicks."""
    topic = world.topic[world.story == home][0]
    choices = (pool & (world.story == home), pool & (world.topic == topic), pool)
    untaken = np.ones(len(pool), dtype=bool)
    clicks: list[int] = []
    while len(clicks) < k:
        where = choices[rng.choice(3, p=(P_STORY, P_TOPIC, 1 - P_STORY - P_TOPIC))]
        members = np.flatnonzero(where & untaken)
        if len(members):  # a small story may run out of new items: that draw is taken again
            weights = world.weight[members]
            clicks.append(int(rng.choice(members, p=weights / weights.sum())))
            untaken[clicks[-1]] = False
    return clicks


def simulate_readers(world: World, n: int, rng: np.random.Generator) -> list[tuple[list[int], list[int]]]:
    """``n`` readers with distinct histories: (``HISTORY`` archive items, ``NEXT`` new items) each."""
    stories, sizes = np.unique(world.story, return_counts=True)
    readers: list[tuple[list[int], list[int]]] = []
    seen: set[tuple[int, ...]] = set()
    while len(readers) < n:
        home = int(rng.choice(stories, p=sizes / sizes.sum()))
        history = _clicks(world, rng, home, ~world.new, HISTORY)
        if tuple(history) not in seen:
            seen.add(tuple(history))
            readers.append((history, _clicks(world, rng, home, world.new, NEXT)))
    return readers


def prepare_bbc_recsim(pkg: Path, out: Path) -> dict[str, int]:
    """Simulated readers -> ``query``/``positive`` JSONL per split, and the candidates as ``items.csv``.

    A query is a reader's history texts joined by ``SEPARATOR``; each of its ``NEXT`` held-out items
    is one row (the ``retrieval`` task's contract: rows sharing a query are one reader's relevant
    items). ``items.csv`` (``text``) holds every new item, the candidate set a ranking is scored on.
    Readers are drawn from one seeded stream with distinct histories, then cut into train, dev and
    test in that order, so no test reader's query is a train or dev query.
    """
    from tunelab.data.writers import write_csv, write_jsonl, write_splits

    items: dict[str, tuple[str, str]] = {}
    for article, raw, topic in _bbc_articles(pkg):
        items.setdefault(item_text(raw), (article, topic))  # a few articles share a title and first sentence
    articles, topics = zip(*items.values(), strict=True)
    world = build_world(list(items), list(articles), list(topics))
    readers = iter(simulate_readers(world, sum(READERS.values()), np.random.default_rng(SEED)))
    splits: dict[str, list[dict[str, str]]] = {}
    for name, n in READERS.items():
        rows: list[dict[str, str]] = []
        for history, clicks in itertools.islice(readers, n):
            query = SEPARATOR.join(world.texts[i] for i in history)
            rows.extend({"query": query, "positive": world.texts[i]} for i in clicks)
        splits[name] = rows
    counts = write_splits(out, splits, write_jsonl)
    candidates = [(world.texts[i],) for i in np.flatnonzero(world.new)]
    return counts | write_splits(out, {"items.csv": candidates}, lambda p, r: write_csv(p, r, ("text",)))
