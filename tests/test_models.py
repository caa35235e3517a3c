import io
import os
import pickle

import numpy as np
import pytest
import skimage.data
import torch

from weakspot.errors import WeakspotError
from weakspot.models import Classifier, load_checkpoint, load_model


def as_tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(image).permute(2, 0, 1).float().div(255)[None]


@pytest.mark.parametrize("name", ["efficientnet_lite0", "efficientnet_lite1"])
def test_offline_imagenet_weights_load_and_recognise_two_images(name):
    classifier = load_model(name, 1000, weights="imagenet", input_size=224, device="cpu")
    cat = classifier.predict_proba(as_tensor(skimage.data.chelsea()))
    coffee = classifier.predict_proba(as_tensor(skimage.data.coffee()))
    assert int(cat.argmax()) == 285  # Egyptian cat
    assert int(coffee.argmax()) == 967  # espresso


def test_imagenet_head_is_replaced_for_num_classes():
    classifier = load_model("efficientnet_lite0", weights="imagenet", class_names=["a", "b", "c"], device="cpu")
    assert classifier.predict_proba(torch.rand(2, 3, 64, 64)).shape == (2, 3)


def test_other_architecture_without_cached_weights_fails_clearly(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(WeakspotError, match="no ImageNet weights for 'resnet18'.*weights=PATH"):
        load_model("resnet18", 2, weights="imagenet")


def test_unknown_architecture_is_a_clear_error():
    with pytest.raises(WeakspotError, match="unknown timm architecture 'no_such_net'"):
        load_model("no_such_net", 2)


def test_predict_proba_on_1000_images_equals_unbatched_loop():
    torch.manual_seed(0)
    classifier = load_model("test_efficientnet", 3, device="cpu", micro_batch=16)
    images = torch.rand(1000, 3, 32, 32)
    batched = classifier.predict_proba(images)
    with torch.no_grad():
        looped = torch.cat([torch.softmax(classifier.net(image[None]), dim=1) for image in images])
    assert batched.shape == (1000, 3)
    assert torch.allclose(batched, looped, atol=1e-5)
    assert classifier.images_evaluated == 1000


def test_automatic_micro_batch_is_one_of_the_candidates_and_keeps_results():
    torch.manual_seed(0)
    classifier = load_model("test_efficientnet", 2, device="cpu", micro_batch="auto")
    images = torch.rand(40, 3, 32, 32)
    probabilities = classifier.predict_proba(images)
    assert classifier.micro_batch in (4, 8, 16, 32, 64, 128)
    assert classifier.images_evaluated == 40  # timing runs are not counted as queries
    classifier.micro_batch = 7
    assert torch.allclose(classifier.predict_proba(images), probabilities, atol=1e-5)


def test_out_of_memory_halves_the_micro_batch_and_goes_on(monkeypatch):
    classifier = load_model("test_efficientnet", 2, device="cpu", micro_batch=32)
    real_forward = classifier.net.forward
    sizes = []

    def forward_that_runs_out_of_memory(images):
        sizes.append(images.shape[0])
        if images.shape[0] > 8:
            raise torch.OutOfMemoryError("fake CUDA out of memory")
        return real_forward(images)

    monkeypatch.setattr(classifier._inference, "module_for", lambda batch: forward_that_runs_out_of_memory)
    probabilities = classifier.predict_proba(torch.rand(50, 3, 32, 32))
    assert probabilities.shape == (50, 2)
    assert classifier.micro_batch == 8
    assert sizes[:3] == [32, 16, 8]


def test_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    classifier = load_model("test_efficientnet", weights=None, class_names=["cat", "dog"], input_size=40, device="cpu")
    path = classifier.save(tmp_path / "model.pt", meta={"epochs": 3, "note": "tiny"})
    restored = load_model("test_efficientnet", 2, weights=path, device="cpu")
    images = torch.rand(5, 3, 48, 48)
    assert torch.allclose(restored.predict_proba(images), classifier.predict_proba(images), atol=1e-6)
    assert restored.class_names == ["cat", "dog"]
    assert restored.preprocessing == classifier.preprocessing
    assert restored.meta == {"epochs": 3, "note": "tiny"}
    assert not [name for name in os.listdir(tmp_path) if name.endswith(".tmp")]


class _Payload:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_checkpoint_with_pickle_payload_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format": "weakspot-checkpoint-v1", "arch": "test_efficientnet", "payload": _Payload()}, path)
    with pytest.raises(WeakspotError, match="evil.pt: refused"):
        load_checkpoint(path)


def test_checkpoint_of_another_architecture_or_class_count_is_refused(tmp_path):
    classifier = load_model("test_efficientnet", 2, device="cpu")
    path = classifier.save(tmp_path / "model.pt")
    with pytest.raises(WeakspotError, match="not a 'test_resnet'"):
        load_model("test_resnet", 2, weights=path)
    with pytest.raises(WeakspotError, match="has 2 classes, expected 5"):
        load_model("test_efficientnet", 5, weights=path)


def test_garbage_and_missing_checkpoints_are_clear_errors(tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(WeakspotError, match="junk.pt: not a readable checkpoint"):
        load_checkpoint(tmp_path / "junk.pt")
    with pytest.raises(WeakspotError, match="missing.pt: checkpoint not found"):
        load_checkpoint(tmp_path / "missing.pt")
    buffer = io.BytesIO()
    torch.save({"something": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(WeakspotError, match="not a weakspot checkpoint"):
        load_checkpoint(tmp_path / "other.pt")


def test_failed_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    classifier = load_model("test_efficientnet", 2, device="cpu")
    path = classifier.save(tmp_path / "model.pt", meta={"version": 1})

    def broken_save(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(WeakspotError, match="model.pt: cannot write there"):
        classifier.save(path, meta={"version": 2})
    monkeypatch.undo()
    assert load_checkpoint(path).meta == {"version": 1}
    assert sorted(os.listdir(tmp_path)) == ["model.pt"]
