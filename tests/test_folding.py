"""BatchNorm folded into convolutions for queries: same outputs, kept up to date, and never where it would lie."""

import pytest
import torch
from torch import nn

from weakspot.folding import fold_batchnorm
from weakspot.models import Classifier, load_model


def randomised_statistics(classifier: Classifier) -> Classifier:
    """Give every BatchNorm statistics and an affine map far from the identity, so a wrong fold shows."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for module in classifier.net.modules():
            if isinstance(module, nn.BatchNorm2d):
                for tensor, low, high in ((module.running_mean, -1.0, 1.0), (module.running_var, 0.2, 3.0),
                                          (module.weight, 0.5, 2.0), (module.bias, -0.5, 0.5)):
                    tensor.copy_(torch.empty(tensor.shape).uniform_(low, high, generator=generator))
    return classifier


def unfolded(classifier: Classifier, images: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return torch.softmax(classifier.net(images), dim=1)


@pytest.mark.parametrize("arch", ["test_efficientnet", "test_resnet"])
def test_folded_copy_gives_the_network_outputs_without_its_batchnorms(arch):
    torch.manual_seed(0)
    classifier = randomised_statistics(load_model(arch, 3, device="cpu"))
    folded, count = fold_batchnorm(classifier.net)
    norms = sum(isinstance(module, nn.BatchNorm2d) for module in classifier.net.modules())
    left = sum(isinstance(module, nn.BatchNorm2d) for module in folded.modules())
    assert count > 0 and left == norms - count
    assert left <= 1  # test_resnet's deep stem ends in a Sequential whose norm is its parent's: not paired
    images = torch.rand(8, 3, 32, 32)
    assert torch.allclose(classifier.predict_proba(images), unfolded(classifier, images), atol=1e-5)
    assert classifier._inference._copy is not None  # the folded copy answered


def test_training_between_queries_is_seen():
    torch.manual_seed(0)
    classifier = load_model("test_efficientnet", 2, device="cpu")
    images = torch.rand(16, 3, 32, 32)
    before = classifier.predict_proba(images)
    classifier.net.train()
    optimizer = torch.optim.SGD(classifier.net.parameters(), lr=0.5)
    nn.functional.cross_entropy(classifier.forward(images), torch.randint(0, 2, (16,))).backward()
    optimizer.step()
    classifier.net.eval()
    after = classifier.predict_proba(images)
    assert not torch.allclose(before, after, atol=1e-3)
    assert torch.allclose(after, unfolded(classifier, images), atol=1e-5)


def test_a_forward_hook_sees_every_query():
    classifier = load_model("test_efficientnet", 2, device="cpu")
    calls = []
    handle = classifier.model.get_classifier().register_forward_hook(lambda *args: calls.append(1))
    classifier.predict_proba(torch.rand(40, 3, 32, 32))
    handle.remove()
    assert len(calls) == -(-40 // classifier.micro_batch)


class NormBeforeConvolution(nn.Module):
    """Registers a convolution and then a norm but applies the norm first: folding by registration is wrong."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3)
        self.norm = nn.BatchNorm2d(3)
        self.head = nn.Linear(3, 2)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.conv(self.norm(images)).mean(dim=(2, 3)))


def test_a_copy_that_disagrees_is_dropped_with_a_warning():
    torch.manual_seed(0)
    network = NormBeforeConvolution()
    with torch.no_grad():
        network.norm.running_mean.fill_(0.4)
        network.norm.running_var.fill_(0.05)
    classifier = Classifier(network, "norm_before_conv", ["a", "b"], device="cpu")
    images = torch.rand(6, 3, 16, 16)
    with pytest.warns(UserWarning, match="BatchNorm folding changed"):
        probabilities = classifier.predict_proba(images)
    assert torch.allclose(probabilities, unfolded(classifier, images), atol=1e-6)
    assert classifier._inference.module_for(images) is classifier.net
