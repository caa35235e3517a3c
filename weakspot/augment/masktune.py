"""MaskTune (Asgari et al., NeurIPS 2022): train ERM, mask what it looked at, fine-tune one epoch on that.

The published recipe (and the authors' code, github.com/aliasgharkhani/Masktune): after ERM training,
compute an XGrad-CAM map of every training image on the last convolutional stage (min-max scaled), mask
the pixels whose heat exceeds the mean + 2 standard deviations of the map's positive values (masked pixels
become 0, black), and fine-tune the ERM model for ONE epoch on the masked training set with the training
augmentation. No group labels. Reported worst-group accuracy: Waterbirds 86.4%, CelebA 78.0% (ResNet-50,
224 px, 100 / 20 ERM epochs at a constant learning rate, SGD).

Where weakspot scales it: the map comes from the deepest stage whose map is at least ``PAPER_MAP_SIDE``
cells wide at the training size (``saliency_layer``): the paper's ResNet-50 at 224 px maps 7 x 7, while
Lite0's last stage at 96 px maps 3 x 3, which can only mask one of nine blurred blobs (at 96 px: ``blocks.4``,
6 x 6). The ERM stage is exactly weakspot's ERM (AdamW, warm-up + cosine, ``config``'s
epochs, e.g. 3 at 96 px). The authors fine-tune at the ERM's learning rate, which is constant in their
runs; ours decays to zero, so the fine-tuning epoch runs at a constant ``finetune_lr`` (default: the run's
base ``lr``) with a fresh AdamW. The map explains the TRUE label (the authors' code explains the predicted
class; on training images ERM fits, the two mostly agree).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any

import torch

from weakspot.augment.staged import StageRunner
from weakspot.errors import WeakspotError
from weakspot.explainers import create_explainer
from weakspot.fills import apply_masks, fill_images
from weakspot.models import Classifier
from weakspot.training.loop import FitResult, TrainConfig

MASK_CHUNK = 256  # images per saliency pass: bounds the memory of the maps, not the model's micro-batch
PAPER_MAP_SIDE = 6  # cells per side of the saliency map, about the paper's 7 x 7 (ResNet-50 at 224 px)


def saliency_layer(classifier: Classifier, size: int) -> str | None:
    """The deepest timm feature stage whose map is at least ``PAPER_MAP_SIDE`` cells wide for ``size`` px
    images; None (Grad-CAM's own choice, the last stage) for a model without ``feature_info``."""
    stages = [stage for stage in getattr(classifier.model, "feature_info", None) or []
              if size / stage["reduction"] >= PAPER_MAP_SIDE]
    return str(stages[-1]["module"]) if stages else None


def saliency_masks(classifier: Classifier, images: torch.Tensor, labels: torch.Tensor, threshold_std: float = 2.0,
                   layer: str | None = None) -> torch.Tensor:
    """MaskTune's masks (N, H, W): pixels of each image's XGrad-CAM map for its label, min-max scaled, that
    exceed the mean + ``threshold_std`` standard deviations of the map's positive values."""
    explainer = create_explainer("xgradcam", classifier, layer=layer)
    masks = []
    for start in range(0, len(labels), MASK_CHUNK):
        heat = explainer.cam(images[start:start + MASK_CHUNK], labels[start:start + MASK_CHUNK]).flatten(1)
        heat = heat - heat.min(dim=1, keepdim=True).values
        heat = heat / (heat.max(dim=1, keepdim=True).values + 1e-7)
        positive = torch.where(heat > 0, heat, torch.nan)
        mean = positive.nanmean(dim=1, keepdim=True)
        std = (positive - mean).pow(2).nanmean(dim=1, keepdim=True).sqrt()  # numpy's nanstd (ddof 0)
        masks.append((heat > mean + threshold_std * std).view(-1, *images.shape[-2:]))
    return torch.cat(masks)


@dataclass
class MaskTune:
    """``weakspot finetune --method masktune``: ERM for the run's epochs, then one masked fine-tuning epoch."""

    finetune_lr: float | None = None
    threshold_std: float = 2.0
    fill: str = "black"
    layer: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if (self.finetune_lr is not None and not self.finetune_lr > 0) or not self.threshold_std >= 0:
            raise WeakspotError("masktune: the fine-tuning learning rate must be > 0 and the threshold >= 0 std")
        fill_images(torch.zeros(1, 3, 1, 1), self.fill)  # an unknown fill fails before training

    def fit(self, classifier: Classifier, images: torch.Tensor, labels: torch.Tensor, config: TrainConfig,
            val_images: torch.Tensor | None = None, val_labels: torch.Tensor | None = None,
            out_dir: str | os.PathLike | None = None, resume: bool = False, progress: bool = False,
            meta: dict[str, Any] | None = None, balance_recall: bool | None = None) -> FitResult:
        stages = StageRunner(val_images, val_labels, out_dir, resume, progress, meta, ("erm", "masked"))
        stages.run("erm", classifier, images, labels, config)
        layer = self.layer or saliency_layer(classifier, images.shape[-1])
        masks = saliency_masks(classifier, images, labels, self.threshold_std, layer)
        masked = apply_masks(images, masks, fill_images(images, self.fill))
        self.details = {"masked_share": float(masks.float().mean()), "threshold_std": self.threshold_std,
                        "layer": layer}
        tune = dataclasses.replace(config, epochs=1, warmup_epochs=0.0, schedule="constant", patience=None,
                                   lr=self.finetune_lr or config.lr)
        return stages.result(stages.run("masked", classifier, masked, labels, tune, balance_recall=balance_recall))
