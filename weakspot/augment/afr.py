"""AFR, Automatic Feature Reweighting (Qiu et al., "Simple and fast group robustness by automatic feature
reweighting", ICML 2023; the authors' code, AndPotap/afr: ``train_embeddings.py``, ``losses.afr`` and the sweep of
``notebooks/wb_celeba.ipynb``). Reported worst-group accuracy: Waterbirds 90.4%, CelebA 82.0%.

The recipe, as the authors run it:

1. ERM on 80% of the training split (``train_supervised.py --train_prop=80``).
2. On the held-out 20%, each image's weight is exp(-gamma x p_true), p_true the ERM model's probability of its
   true class, so the images ERM gets least right weigh most; each class's weights are divided by its size
   (``balance_classes``: a class's share no longer follows its frequency) and all normalised to sum 1
   (``compute_afr_weights``).
3. The last layer alone is retrained on the held-out images' penultimate features, full batch: its logits are
   the ERM head's plus a new linear layer's (``Model``: ``y_old + y_new``), the loss is the weighted cross-entropy
   summed plus lambda x the new layer's squared norm (the pull toward the ERM head), plain SGD at lr 0.01,
   gradients clipped to norm 1, 500 epochs, and the epoch with the best validation worst-group accuracy kept.
4. gamma and lambda are chosen on validation worst-group accuracy over a grid (``sweep``).

No group labels for training; group labels on validation for the choice of gamma, lambda and the epoch, as the
paper does. Without them (``val_groups`` None, a data set with no group column), the choice is made on the
validation split's worst class. Where weakspot scales it: the grid joins the authors' two image sweeps
(Waterbirds: gamma 4-20, lambda 0-0.3; CelebA: gamma 1-3, lambda 0.001-0.1) into one, and the whole grid trains
at once as one batched tensor program (each setting's gradient clipped on its own, as ``clip_grad_norm_`` does).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from weakspot.augment.last_layer import HeadRefit, penultimate_features, worst_group_accuracy
from weakspot.errors import WeakspotError
from weakspot.models import Classifier

AFR_GAMMAS = (1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 6.0, 8.0, 10.0, 12.0, 14.0, 16.0, 18.0, 20.0)
AFR_LAMBDAS = (0.0, 0.001, 0.01, 0.1, 0.2, 0.3)
AFR_GRID = tuple((gamma, lam) for gamma in AFR_GAMMAS for lam in AFR_LAMBDAS)  # the settings trained at once
AFR_HOLDOUT = 0.2  # the share of the training split the head is retrained on (the authors' --train_prop=-20)
AFR_EPOCHS = 500  # full-batch steps (the authors' Waterbirds sweep)
AFR_LR = 0.01


def afr_weights(logits: torch.Tensor, labels: torch.Tensor, gammas: torch.Tensor) -> torch.Tensor:
    """Per setting and image (K, N): exp(-gamma x p_true), divided by the size of the image's class, summing to 1."""
    p_true = logits.softmax(-1).gather(1, labels[:, None])[:, 0]
    weights = torch.exp(-gammas[:, None] * p_true[None])
    for label in labels.unique():
        weights[:, labels == label] /= (labels == label).sum()
    return weights / weights.sum(dim=1, keepdim=True)


@dataclass
class Afr(HeadRefit):
    """``weakspot finetune --method afr``: ERM on part of the training split, then the head retrained on the rest
    with AFR's weights (``afr_weights``), gamma and lambda chosen on the validation split."""

    val_groups: Sequence[str] | None = None  # validation group labels for the choice; None: the classes
    holdout: float | None = AFR_HOLDOUT  # None: the head is retrained on the training images the model was trained on
    seed: int = 0
    details: dict[str, Any] = field(default_factory=dict)
    name: ClassVar[str] = "afr"

    def __post_init__(self) -> None:
        if self.holdout is not None and not 0.0 < self.holdout < 1.0:
            raise WeakspotError(f"afr: the held-out share must be in (0, 1), got {self.holdout}")

    def check(self, val_images: torch.Tensor | None, val_labels: torch.Tensor | None, balance_recall: bool | None) -> None:
        if val_images is None or val_labels is None:
            raise WeakspotError("afr: gamma and lambda are chosen on the validation split, and there is none")
        if self.val_groups is not None and len(self.val_groups) != len(val_labels):
            raise WeakspotError(f"afr: {len(self.val_groups)} group labels for {len(val_labels)} validation images")
        super().check(val_images, val_labels, balance_recall)

    def _split(self, count: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The ERM rows and the held-out rows, a seeded split of the training split (all rows both, without one)."""
        if self.holdout is None:
            return torch.arange(count), torch.arange(count)
        order = torch.randperm(count, generator=torch.Generator().manual_seed(self.seed))
        held = max(1, round(self.holdout * count))
        if count - held < 2:
            raise WeakspotError(f"afr: {count} training images leave too few for the ERM stage")
        return order[held:].sort().values, order[:held].sort().values

    def erm_rows(self, count: int) -> torch.Tensor:
        return self._split(count)[0]

    def refit_head(self, classifier: Classifier, images: torch.Tensor, labels: torch.Tensor,
                   val_images: torch.Tensor, val_labels: torch.Tensor) -> None:
        """AFR's second stage on ``classifier``'s head, in place (the module docstring's steps 2-4)."""
        erm_rows, held = self._split(len(labels))
        features, head = penultimate_features(classifier, images[held], "afr")
        val_features, _ = penultimate_features(classifier, val_images, "afr")
        groups = np.array(self.val_groups) if self.val_groups is not None else val_labels.cpu().numpy()
        weight0, bias0 = head.weight.detach().cpu().double(), head.bias.detach().cpu().double()
        train_x, val_x = torch.from_numpy(features), torch.from_numpy(val_features)
        train_y = labels[held].cpu()
        scores, deltas, epochs = self._sweep(train_x, train_y, val_x, val_labels.cpu().numpy(), groups, weight0, bias0)
        best = int(np.argmax(scores))  # the first of equals: the smallest gamma, then the smallest lambda
        with torch.no_grad():
            head.weight.copy_((weight0 + deltas[0][best]).to(head.weight))
            head.bias.copy_((bias0 + deltas[1][best]).to(head.bias))
        erm_predicted = (val_x @ weight0.T + bias0).argmax(1).numpy()
        self.details = {"gamma": AFR_GRID[best][0], "lambda": AFR_GRID[best][1], "epoch": int(epochs[best]),
                        "chosen_on": "validation worst group" if self.val_groups is not None else "validation worst class",
                        "val_score": float(scores[best]),
                        "val_score_erm_head": worst_group_accuracy(erm_predicted, val_labels.cpu().numpy(), groups),
                        "erm_images": len(erm_rows), "reweighted_images": len(held)}

    def _sweep(self, x: torch.Tensor, y: torch.Tensor, val_x: torch.Tensor, val_y: np.ndarray, groups: np.ndarray,
               weight0: torch.Tensor, bias0: torch.Tensor) -> tuple[np.ndarray, tuple[torch.Tensor, torch.Tensor], np.ndarray]:
        """Every (gamma, lambda) of the grid trained at once; per setting, its best validation score, the new
        layer at that epoch and the epoch."""
        gammas = torch.tensor([gamma for gamma, _ in AFR_GRID], dtype=torch.float64)
        lambdas = torch.tensor([lam for _, lam in AFR_GRID], dtype=torch.float64)
        base_logits, val_base = x @ weight0.T + bias0, val_x @ weight0.T + bias0
        weights = afr_weights(base_logits, y, gammas)
        classes, dims = weight0.shape
        bound = 1.0 / dims ** 0.5  # nn.Linear's initialisation of the new layer, the same for every setting
        generator = torch.Generator().manual_seed(self.seed)
        delta_w = ((torch.rand(classes, dims, generator=generator, dtype=torch.float64) * 2 - 1) * bound).repeat(len(AFR_GRID), 1, 1)
        delta_b = ((torch.rand(classes, generator=generator, dtype=torch.float64) * 2 - 1) * bound).repeat(len(AFR_GRID), 1)
        best_scores, best_epochs = np.full(len(AFR_GRID), -1.0), np.zeros(len(AFR_GRID), dtype=int)
        best_w, best_b = delta_w.clone(), delta_b.clone()
        targets = y.repeat(len(AFR_GRID))
        for epoch in range(1, AFR_EPOCHS + 1):
            delta_w.requires_grad_(True)
            delta_b.requires_grad_(True)
            logits = base_logits[None] + torch.einsum("nd,kcd->knc", x, delta_w) + delta_b[:, None]
            losses = F.cross_entropy(logits.reshape(-1, classes), targets, reduction="none").reshape(len(AFR_GRID), -1)
            penalty = delta_w.pow(2).sum(dim=(1, 2)) + delta_b.pow(2).sum(dim=1)
            grad_w, grad_b = torch.autograd.grad(((weights * losses).sum(dim=1) + lambdas * penalty).sum(), (delta_w, delta_b))
            norms = (grad_w.pow(2).sum(dim=(1, 2)) + grad_b.pow(2).sum(dim=1)).sqrt()
            scale = (1.0 / (norms + 1e-6)).clamp(max=1.0)  # clip_grad_norm_(max_norm=1) per setting
            with torch.no_grad():
                delta_w = delta_w - AFR_LR * scale[:, None, None] * grad_w
                delta_b = delta_b - AFR_LR * scale[:, None] * grad_b
                predicted = (val_base[None] + torch.einsum("nd,kcd->knc", val_x, delta_w) + delta_b[:, None]).argmax(-1).numpy()
            scores = np.array([worst_group_accuracy(row, val_y, groups) for row in predicted])
            improved = scores > best_scores
            best_scores[improved], best_epochs[improved] = scores[improved], epoch
            best_w[torch.from_numpy(improved)] = delta_w[torch.from_numpy(improved)]
            best_b[torch.from_numpy(improved)] = delta_b[torch.from_numpy(improved)]
        return best_scores, (best_w, best_b), best_epochs
