"""Method registry: one line per method (a module may register several, e.g. peft's)."""

from __future__ import annotations

from tunelab.methods import (
    adalora,
    adversarial,
    distill,
    ewc,
    freeze,
    full,
    moe,
    peft,
    rdrop,
    rehearsal,
    self_train,
)
from tunelab.methods.spec import MethodSpec
from tunelab.registry import Registry

METHODS: Registry[MethodSpec] = Registry(
    "method",
    {
        full.SPEC.name: full.SPEC,
        freeze.SPEC.name: freeze.SPEC,
        moe.SPEC.name: moe.SPEC,
        **{spec.name: spec for spec in peft.SPECS},
        adalora.SPEC.name: adalora.SPEC,
        distill.SPEC.name: distill.SPEC,
        adversarial.SPEC.name: adversarial.SPEC,
        rdrop.SPEC.name: rdrop.SPEC,
        rehearsal.SPEC.name: rehearsal.SPEC,
        ewc.SPEC.name: ewc.SPEC,
        self_train.SPEC.name: self_train.SPEC,
    },
)
