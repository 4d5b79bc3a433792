"""Every registered task is served, from every saved form, with the answer ``tunelab predict`` gives.

Parametrised over ``TASKS.names()`` x ``ARTIFACT_KINDS`` (adapter, merged, int8, pruned, MoE,
distilled; pairs a method declares it cannot train are left out by its own ``refuses``), so a newly
registered task without a serve route, or a saved form the server loads differently from
``load_artifact``, fails here. What each route must answer: ``served_models.check_served``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from served_models import ARTIFACT_KINDS, ArtifactCache, cases, check_served, refusal, serve
from tunelab.inference.artifact import load_artifact
from tunelab.tasks import TASKS

CASES = cases()


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory, tiny_backbone_dir: Path) -> ArtifactCache:
    return ArtifactCache(tmp_path_factory.mktemp("every-head"), tiny_backbone_dir)


def test_every_task_is_in_the_matrix():
    """Only a method's declared refusal takes a (task, saved form) pair out, never a missing route."""
    left_out = {(t, k) for t in TASKS.names() for k in ARTIFACT_KINDS} - set(CASES)
    assert all(refusal(t, k) for t, k in left_out)
    assert {t for t, _ in CASES} == set(TASKS.names())


@pytest.mark.parametrize(("task", "kind"), CASES, ids=[f"{t}-{k}" for t, k in CASES])
def test_served_answer_equals_tunelab_predict(saved: ArtifactCache, task: str, kind: str) -> None:
    path = saved(task, kind)
    art = load_artifact(path)
    with serve(path) as client:
        check_served(client, art)
