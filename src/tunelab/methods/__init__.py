"""Method registry: one line per method module."""

from __future__ import annotations

from tunelab.methods import adversarial, distill, full, moe, rdrop
from tunelab.methods.spec import MethodSpec
from tunelab.registry import Registry

METHODS: Registry[MethodSpec] = Registry(
    "method",
    {
        full.SPEC.name: full.SPEC,
        moe.SPEC.name: moe.SPEC,
        distill.SPEC.name: distill.SPEC,
        adversarial.SPEC.name: adversarial.SPEC,
        rdrop.SPEC.name: rdrop.SPEC,
    },
)
