"""Grad-CAM (Selvaraju et al. 2017) on the last convolutional stage, pooled to superpixels (study 001), and
XGrad-CAM (Fu et al. 2020), the saliency MaskTune masks with.

One forward + backward per batch through ``classifier.forward``: the feature maps of the chosen layer are
weighted per channel by their gradients of the target logit (Grad-CAM: the spatial mean; XGrad-CAM: the
activation-weighted sum, as ``pytorch_grad_cam.XGradCAM`` computes it), summed over channels and rectified.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from weakspot.classifier import Classifier
from weakspot.errors import WeakspotError
from weakspot.explainers.base import Explainer, segment_sums


def last_conv_stage(model: nn.Module) -> str:
    """The module name of the last convolutional stage: timm's ``feature_info`` (the deepest stage, e.g.
    ``layer4`` for ResNets, ``blocks.6`` for EfficientNets, ``stages.3`` for ConvNeXt) when the model has
    it, otherwise the last ``nn.Conv2d``."""
    info = getattr(model, "feature_info", None)
    if info:
        return str(info[-1]["module"])
    convolutions = [name for name, module in model.named_modules() if isinstance(module, nn.Conv2d)]
    if not convolutions:
        raise WeakspotError(f"{type(model).__name__} has no Conv2d layer: Grad-CAM needs a convolutional model")
    return convolutions[-1]


class GradCam(Explainer):
    """Score of a segment = mean Grad-CAM heat over its pixels (the heatmap is the pixel-level CAM).

    ``layer`` names a module of ``classifier.model`` (default: ``last_conv_stage``). ``batch_size``
    images share one forward + backward (default: the classifier's micro-batch). One evaluation per image.
    """

    name = "gradcam"

    def __init__(self, classifier: Classifier, n_segments: int = 50, segmentation: str = "slic",
                 layer: str | None = None, batch_size: int | None = None) -> None:
        super().__init__(classifier, n_segments, segmentation)
        self.layer = layer or last_conv_stage(classifier.model)
        modules = dict(classifier.model.named_modules())
        if self.layer not in modules:
            raise WeakspotError(f"no module named '{self.layer}' in {classifier.arch} (Grad-CAM layer)")
        self.module = modules[self.layer]
        self.batch_size = batch_size

    def cam(self, images: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Pixel-level Grad-CAM (N, H, W), rectified, bilinearly upsampled to the image size, unnormalised."""
        captured: list[torch.Tensor] = []
        handle = self.module.register_forward_hook(lambda module, inputs, output: captured.append(output))
        maps = []
        step = self.batch_size or self.classifier.micro_batch
        try:
            with torch.enable_grad():
                for start in range(0, images.shape[0], step):
                    captured.clear()
                    logits = self.classifier.forward(images[start:start + step])
                    chosen = logits.gather(1, target[start:start + step].to(logits.device)[:, None]).sum()
                    activation = captured[-1]
                    gradient, = torch.autograd.grad(chosen, activation)
                    weights = self.channel_weights(gradient.float(), activation.float().detach())
                    heat = F.relu((weights * activation.float()).sum(dim=1, keepdim=True)).detach()
                    maps.append(F.interpolate(heat, size=images.shape[-2:], mode="bilinear",
                                              align_corners=False)[:, 0].cpu())
        finally:
            handle.remove()
        return torch.cat(maps)

    @staticmethod
    def channel_weights(gradient: torch.Tensor, activation: torch.Tensor) -> torch.Tensor:
        """Grad-CAM's weight of each feature map: its gradient averaged over the map, (N, C, 1, 1)."""
        return gradient.mean(dim=(2, 3), keepdim=True)

    def attribute(self, images: torch.Tensor, target: torch.Tensor, segments: torch.Tensor,
                  clean_probability: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        heatmap = self.cam(images, target)
        sums, sizes = segment_sums(heatmap[:, None], segments)
        means = sums[:, 0] / sizes  # 0/0 = NaN exactly on the padding past each image's segment count
        return means, torch.ones(images.shape[0], dtype=torch.long), heatmap


class XGradCam(GradCam):
    """XGrad-CAM (Fu et al. 2020): each feature map weighted by the sum of gradient x activation over the
    map, divided by the map's activation sum (``pytorch_grad_cam.XGradCAM``'s formula, eps 1e-7)."""

    name = "xgradcam"

    @staticmethod
    def channel_weights(gradient: torch.Tensor, activation: torch.Tensor) -> torch.Tensor:
        totals = activation.sum(dim=(2, 3), keepdim=True)
        return (gradient * activation / (totals + 1e-7)).sum(dim=(2, 3), keepdim=True)
