"""Robustness assertions for a user's own pytest suite::

    from weakspot.testing import assert_robust
    assert_robust(classifier, images, labels, attack="block", min_accuracy=0.6)

A failure names the images and perturbations that broke the model and saves them as PNGs.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from weakspot.attacks import create_attack
from weakspot.attacks.base import AttackResult
from weakspot.classifier import Classifier, Preprocessing
from weakspot.fileio import atomic_write

DEFAULT_FAILURE_DIR = Path("weakspot-failures")
MAX_LISTED = 10


def as_classifier(model: Classifier | nn.Module) -> Classifier:
    """Accept a bare module taking [0,1] images too: wrap it with no preprocessing of its own."""
    if isinstance(model, Classifier):
        return model
    device = next(model.parameters()).device
    with torch.no_grad():
        num_classes = int(model.eval()(torch.zeros(1, 3, 32, 32, device=device)).shape[1])
    identity = Preprocessing(input_size=None, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    return Classifier(model, type(model).__name__, [str(i) for i in range(num_classes)], identity, device=device)


def _save_png(image: torch.Tensor, path: Path) -> Path:
    from PIL import Image

    array = (image.detach().cpu().clamp(0, 1).permute(1, 2, 0).numpy() * 255 + 0.5).astype("uint8")
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return atomic_write(path, lambda handle: handle.write(buffer.getvalue()))


def assert_robust(model: Classifier | nn.Module, images: torch.Tensor, labels: torch.Tensor | Sequence[int],
                  attack: str = "block", min_accuracy: float = 0.5, budget: int = 200,
                  names: Sequence[str] | None = None, save_dir: str | Path | None = DEFAULT_FAILURE_DIR,
                  **attack_params: Any) -> AttackResult:
    """Fail (AssertionError) when robust accuracy under ``attack`` is below ``min_accuracy``.

    ``names`` label the images in the message (file names, ids); the fooling images are written to
    ``save_dir/<attack>/`` (None: not saved). Returns the attack result when the assertion holds.
    """
    classifier = as_classifier(model)
    labels = torch.as_tensor(labels, dtype=torch.long)
    result = create_attack(attack, classifier, budget=budget, **attack_params)(images, labels)
    if result.robust_accuracy >= min_accuracy:
        return result
    names = list(names) if names is not None else [f"image {i}" for i in range(len(labels))]
    broken = torch.nonzero(result.fooled).flatten().tolist()
    lines = []
    for index in broken[:MAX_LISTED]:
        perturbation = result.perturbations[index]
        saved = ""
        if save_dir is not None:
            saved = f" -> {_save_png(result.adversarial[index], Path(save_dir) / attack / f'{index:05d}.png')}"
        lines.append(f"  {names[index]}: class {int(result.original_class[index])} -> "
                     f"{int(result.adversarial_class[index])} by {perturbation.to_dict() if perturbation else '?'}{saved}")
    more = f"\n  ... and {len(broken) - MAX_LISTED} more" if len(broken) > MAX_LISTED else ""
    raise AssertionError(
        f"robust accuracy under '{attack}' is {result.robust_accuracy:.3f} < {min_accuracy:.3f} "
        f"({len(broken)} of {len(labels)} images fooled, {int((~result.correct).sum())} misclassified clean):\n"
        + "\n".join(lines) + more)
