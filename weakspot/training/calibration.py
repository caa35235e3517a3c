"""Equal-recall class biases: after training, shift each class's logit by a constant so that every class's
recall on a held-out split is the same (a post-hoc logit adjustment; Menon et al., ICLR 2021, fit their
shifts from class priors, here they are fitted on validation recalls).

Why: the adversarial loop changes what the stream shows each class (cue-conflicting pool images, edited cue
zones), and its model can end leaning towards one class as a whole, not only on the cue (sticker seed 4, a tuning
run: clean-test females 57% right, males 86%). One constant per class, fitted on the validation split's class
labels (no group labels), moves only that balance. On the loop's ten tuning runs it raised the mean worst group
from 55.1% to 57.3% at a clean-test accuracy 0.1 lower (docs/results.md). ``worst_group_bias``,
told the groups, gives the best any such shift can do (``scripts/recall_balance_probe.py --best-shift``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from weakspot.models import Classifier, linear_head

BIAS_SPAN = 10.0  # shifts searched, in logits: [-span, span]
BIAS_STEP = 0.025  # logits between two shifts searched: about 0.6% of probability around 0.5
SWEEPS = 10  # coordinate sweeps over the classes when there are more than two
GRID_CHUNK = 64  # shifts evaluated at a time (memory: chunk x images x classes)


def class_recalls(predicted: torch.Tensor, labels: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """Recall of each of ``classes`` for predictions (..., N) of ``labels`` (N): shape (..., len(classes))."""
    return torch.stack([(predicted[..., labels == label] == label).float().mean(dim=-1) for label in classes], dim=-1)


def best_bias(logits: torch.Tensor, score: Callable[[torch.Tensor], torch.Tensor], span: float = BIAS_SPAN,
              step: float = BIAS_STEP, sweeps: int = SWEEPS) -> torch.Tensor:
    """Per-class constants (class 0's stays 0) added to ``logits`` (N, C) that maximise ``score`` (predictions
    (S, N) of S shifted copies in, one score each out) over a grid of shifts, the smallest shift among equals (a
    model already at the best is left as it is); with more than two classes, ``sweeps`` passes of one class at a
    time."""
    logits = logits.detach().float().cpu()
    bias = torch.zeros(logits.shape[1])
    reach = int(round(span / step))
    grid = torch.arange(-reach, reach + 1) * step  # holds 0 exactly
    for _ in range(sweeps if logits.shape[1] > 2 else 1):
        for label in range(1, logits.shape[1]):
            scores = []
            for start in range(0, len(grid), GRID_CHUNK):
                shifts = grid[start:start + GRID_CHUNK]
                shifted = (logits + bias).expand(len(shifts), -1, -1).clone()
                shifted[:, :, label] += shifts[:, None]
                scores.append(score(shifted.argmax(dim=2)))
            scored = torch.cat(scores)
            candidates = torch.nonzero(scored >= scored.max() - 1e-9).flatten()
            bias[label] += grid[candidates[(grid[candidates]).abs().argmin()]]
    return bias


def equal_recall_bias(logits: torch.Tensor, labels: torch.Tensor, span: float = BIAS_SPAN, step: float = BIAS_STEP,
                      sweeps: int = SWEEPS) -> torch.Tensor:
    """``best_bias`` that makes the recalls of the classes present in ``labels`` as equal (least variance) as
    the grid allows."""
    labels = labels.cpu()
    classes = labels.unique()
    if len(classes) < 2:
        return torch.zeros(logits.shape[1])
    return best_bias(logits, lambda predicted: -class_recalls(predicted, labels, classes).var(dim=1, unbiased=False),
                     span, step, sweeps)


def worst_group_bias(logits: torch.Tensor, labels: torch.Tensor, groups: torch.Tensor, span: float = BIAS_SPAN,
                     step: float = BIAS_STEP, sweeps: int = SWEEPS) -> torch.Tensor:
    """``best_bias`` that maximises the accuracy of the worst of ``groups`` (one integer per image)."""
    labels, groups = labels.cpu(), groups.cpu()
    return best_bias(logits, lambda predicted: worst_group_accuracy(predicted, labels, groups), span, step, sweeps)


def worst_group_accuracy(predicted: torch.Tensor, labels: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """The accuracy of the worst of ``groups`` (one integer per image) for predictions (..., N): one per row."""
    members = [groups == group for group in groups.unique()]
    return torch.stack([(predicted[..., member] == labels[member]).float().mean(dim=-1) for member in members],
                       dim=-1).min(dim=-1).values


def balance_recall(classifier: Classifier, images: torch.Tensor, labels: torch.Tensor) -> dict[str, Any]:
    """Fit ``equal_recall_bias`` on (images, labels) and add it to the classifier's head in place, so the
    checkpoint it saves carries it; returns the biases and the recalls before and after, per class name."""
    head = linear_head(classifier, "recall balance", images[:1])
    logits, labels = image_logits(classifier, images), labels.cpu()
    bias = equal_recall_bias(logits, labels)
    classes = labels.unique()
    before = class_recalls(logits.argmax(dim=1), labels, classes)
    after = class_recalls((logits + bias.double()).argmax(dim=1), labels, classes)
    with torch.no_grad():
        head.bias += bias.to(head.bias.device, head.bias.dtype)
    names = [classifier.class_names[int(label)] for label in classes]
    return {"bias": dict(zip(classifier.class_names, bias.tolist())),
            "recall_before": dict(zip(names, before.tolist())), "recall_after": dict(zip(names, after.tolist()))}


def image_logits(classifier: Classifier, images: torch.Tensor) -> torch.Tensor:
    """The classifier's logits of ``images`` up to a constant per image (which moves no argmax), on the CPU."""
    with torch.inference_mode():
        return classifier.predict_proba(images).cpu().double().clamp_min(1e-12).log()
