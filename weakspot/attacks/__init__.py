"""Attacks: every attack is a class constructed with the classifier and its parameters and called on
images + labels, returning an ``AttackResult``. ``create_attack(name, classifier, **params)`` picks one by
name from ``ATTACKS`` (a plain dict: no global registration)."""

from __future__ import annotations

import inspect
from typing import Any

from weakspot.attacks.base import Attack, AttackResult, Perturbation
from weakspot.attacks.geometric import CropAttack, FlipAttack, SpatialAttack
from weakspot.attacks.gradient import FgsmAttack, PgdAttack
from weakspot.attacks.occlusion import BlockAttack, ButtonAttack, SuperpixelAttack
from weakspot.classifier import Classifier
from weakspot.registry import create_from

ATTACKS: dict[str, type[Attack]] = {
    "superpixel": SuperpixelAttack,
    "block": BlockAttack,
    "button": ButtonAttack,
    "crop": CropAttack,
    "flip": FlipAttack,
    "spatial": SpatialAttack,
    "fgsm": FgsmAttack,
    "pgd": PgdAttack,
}


def create_attack(name: str, classifier: Classifier, **params: Any) -> Attack:
    """The attack called ``name`` (see ``ATTACKS``) on ``classifier``; an unknown parameter is an error."""
    return create_from(ATTACKS, "attack", name, classifier, **params)


def attack_params(name: str, budget: int, **optional: Any) -> dict[str, Any]:
    """Constructor arguments: the budget, plus those of ``optional`` (seed, max_in_flight, guidance_shift)
    the attack ``name`` takes, so one call site can serve attacks with different parameters."""
    accepted = inspect.signature(ATTACKS[name].__init__).parameters
    return {"budget": budget, **{key: value for key, value in optional.items() if key in accepted}}


__all__ = ["ATTACKS", "Attack", "AttackResult", "Perturbation", "attack_params", "create_attack"]
