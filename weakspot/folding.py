"""BatchNorm folded into the convolution before it, for the many eval-mode queries of explainers and attacks.

In eval mode a BatchNorm is an affine map per channel, so it can be merged into the weights and bias of the
convolution that feeds it. On CPU this saves a quarter of EfficientNet-Lite0's forward time (one pass over every
activation per BatchNorm), and ``predict_proba`` is where the loop spends its time. The network itself keeps its
BatchNorms, since training needs them: ``FoldedNetwork`` keeps a folded copy and builds it again whenever a
weight or running statistic of the network has changed since.
"""

from __future__ import annotations

import copy
import warnings

import torch
from timm.layers import BatchNormAct2d
from torch import nn

# A folded copy must give the network's logits up to rounding; a wrongly paired convolution is off by O(1).
FOLDING_TOLERANCE = 1e-3
CHECK_IMAGES = 2  # images a caller passes to check a new copy on


def _norm_tail(norm: nn.BatchNorm2d) -> nn.Module | None:
    """What is left of ``norm`` once folded: nothing for torch's BatchNorm2d, the dropout and activation of timm's
    BatchNormAct2d; None for any other subclass, whose forward we do not know."""
    if type(norm) is nn.BatchNorm2d:
        return nn.Identity()
    if type(norm) is BatchNormAct2d:
        return nn.Sequential(norm.drop, norm.act)
    return None


@torch.no_grad()
def fold_batchnorm(network: nn.Module) -> tuple[nn.Module, int]:
    """An eval-mode copy of ``network`` in which every BatchNorm2d registered right after a Conv2d in the same
    parent is merged into that convolution; returns the copy and how many were folded.

    Pairs are found by registration order (timm's and torchvision's blocks register a convolution and then its
    norm), which a model could break; ``FoldedNetwork`` checks the copy's outputs against the network's.
    """
    folded = copy.deepcopy(network).eval()
    count = 0
    for parent in list(folded.modules()):
        children = list(parent.named_children())
        for (_, conv), (norm_name, norm) in zip(children, children[1:]):
            if (not isinstance(conv, nn.Conv2d) or not isinstance(norm, nn.BatchNorm2d)
                    or conv.out_channels != norm.num_features):
                continue
            tail = _norm_tail(norm)
            if tail is None or norm.running_mean is None or norm.running_var is None:
                continue
            scale = torch.rsqrt(norm.running_var + norm.eps)
            shift = -norm.running_mean * scale
            if norm.affine:
                scale, shift = scale * norm.weight, shift * norm.weight + norm.bias
            bias = shift if conv.bias is None else conv.bias * scale + shift
            conv.weight.copy_(conv.weight * scale.view(-1, 1, 1, 1))
            conv.bias = nn.Parameter(bias, requires_grad=False)
            setattr(parent, norm_name, tail)
            count += 1
    return folded.requires_grad_(False), count


class FoldedNetwork:
    """The module to run for eval-mode queries of ``network``: its BatchNorm-folded copy, kept up to date.

    The copy is rebuilt when any parameter or buffer of the network was replaced or changed in place (their
    version counters), so training between queries is seen. The network itself answers while any of its modules
    is in train mode or has a forward hook (a hook on the copy would not fire), while its own outputs are not
    finite (nothing to check a copy against), and for good once a copy's outputs differ from the network's.
    """

    def __init__(self, network: nn.Module) -> None:
        self.network = network
        self._copy: nn.Module | None = None
        self._built_from: list[tuple[torch.Tensor, int]] = []
        self._usable = True

    def _versions(self) -> list[tuple[torch.Tensor, int]]:
        """Every parameter and buffer of the network with its version counter (bumped by any in-place change)."""
        return [(tensor, tensor._version) for tensor in (*self.network.parameters(), *self.network.buffers())]

    def _unchanged(self) -> bool:
        current = self._versions()
        return len(current) == len(self._built_from) and all(
            tensor is built and version == built_version
            for (tensor, version), (built, built_version) in zip(current, self._built_from))

    def module_for(self, batch: torch.Tensor) -> nn.Module:
        """The module to run on ``batch`` (the caller's images, prepared for the network; outside autocast, so
        that a new copy is checked in full precision)."""
        if not self._usable or any(module.training or module._forward_hooks or module._forward_pre_hooks
                                   for module in self.network.modules()):
            return self.network
        if self._copy is None or not self._unchanged():
            expected = self.network(batch).float()
            if not torch.isfinite(expected).all():
                return self.network  # nothing to check a copy against: the network answers as it is
            with torch.inference_mode(False):
                folded, count = fold_batchnorm(self.network)
            if count == 0 or not self._agrees(folded(batch).float(), expected):
                self._usable = False
                self._copy = None
                return self.network
            self._copy, self._built_from = folded, self._versions()
        return self._copy

    @staticmethod
    def _agrees(got: torch.Tensor, expected: torch.Tensor) -> bool:
        tolerance = FOLDING_TOLERANCE * (1.0 + expected.abs().max().item())
        if torch.allclose(got, expected, rtol=FOLDING_TOLERANCE, atol=tolerance):
            return True
        warnings.warn("BatchNorm folding changed this network's outputs (a norm registered after a convolution it "
                      "does not follow?): predict_proba runs the network unfolded", stacklevel=4)
        return False
