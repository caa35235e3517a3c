"""Attacks: every attack is a class constructed with the classifier and its parameters and called on
images + labels, returning an ``AttackResult``. ``create_attack(name, classifier, **params)`` picks one by
name from ``ATTACKS`` (a plain dict: no global registration)."""

from __future__ import annotations

from typing import Any

from weakspot.attacks.base import Attack, AttackResult, Perturbation
from weakspot.attacks.geometric import CropAttack, FlipAttack, SpatialAttack
from weakspot.attacks.gradient import FgsmAttack, PgdAttack
from weakspot.attacks.occlusion import BlockAttack, ButtonAttack, SuperpixelAttack
from weakspot.models import Classifier
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


__all__ = ["ATTACKS", "Attack", "AttackResult", "Perturbation", "create_attack"]
