"""Name -> class lookup shared by the explainer, attack and training-method registries (timm's
``create_model`` idea, without global registration)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from weakspot.errors import WeakspotError

Built = TypeVar("Built")


def create_from(registry: Mapping[str, Callable[..., Built]], kind: str, name: str, *args: Any, **params: Any) -> Built:
    """``registry[name](*args, **params)``; an unknown name or parameter is a one-line WeakspotError."""
    if name not in registry:
        raise WeakspotError(f"unknown {kind} '{name}' (choose from {', '.join(registry)})")
    try:
        return registry[name](*args, **params)
    except TypeError as error:
        raise WeakspotError(f"{kind} '{name}': {error}") from None
