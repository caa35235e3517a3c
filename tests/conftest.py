"""Shared fixtures: tiny models on tiny generated images, and the real UTKFace subset when it is beside us."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from weakspot.cues import ButtonCue
from weakspot.models import Classifier, load_model
from weakspot.shortcut import build_shortcut_benchmark, make_shortcut_dataset, write_imageset
from weakspot.training import TrainConfig, train_classifier

UTKFACE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "utkface"


@pytest.fixture(scope="session")
def utkface_dir() -> Path:
    if not (UTKFACE / "labels.csv").is_file():
        pytest.skip(f"UTKFace subset not found at {UTKFACE} (it lives in ../shared beside the repository)")
    return UTKFACE


@pytest.fixture(scope="session")
def button_data():
    """Train/test planted-shortcut sets where the button alone decides the label (class 1 = button)."""
    train, train_boxes = make_shortcut_dataset(384, 48, cue_rate=1.0, signal=0.0, seed=0)
    test, test_boxes = make_shortcut_dataset(64, 48, cue_rate=1.0, signal=0.0, seed=1)
    return train, test, test_boxes


@pytest.fixture(scope="session")
def button_model(button_data) -> Classifier:
    """timm's tiny ``test_efficientnet`` trained on the button set (reaches 100% test accuracy in ~2 s)."""
    train, _, _ = button_data
    torch.manual_seed(0)
    classifier = load_model("test_efficientnet", weights=None, class_names=train.class_names, device="cpu")
    train_classifier(classifier, train.images, train.labels, TrainConfig(epochs=5, lr=3e-3, seed=0))
    return classifier


@pytest.fixture(scope="session")
def gradcam_button_data():
    """128 px button sets for Grad-CAM, whose resolution is its layer's (stride 16: an 8x8 map, against 3x3
    at 48 px). The button (0.12 of the width, its own SLIC segment) moves by up to a quarter of the image,
    so the model has to find it rather than look at a fixed place."""
    cue = ButtonCue(size_frac=0.12, jitter=0.25)
    train, _ = make_shortcut_dataset(384, 128, cue_rate=1.0, signal=0.0, seed=0, cue=cue)
    test, test_boxes = make_shortcut_dataset(96, 128, cue_rate=1.0, signal=0.0, seed=1, cue=cue)
    return train, test, test_boxes


@pytest.fixture(scope="session")
def gradcam_button_model(gradcam_button_data) -> Classifier:
    """timm's tiny ``test_resnet`` trained on the 128 px button set (99% test accuracy, ~15-25 s on one core).
    A ResNet because its stride-16 stage localised the button better than ``test_efficientnet``'s did."""
    train, _, _ = gradcam_button_data
    torch.manual_seed(0)
    classifier = load_model("test_resnet", weights=None, class_names=train.class_names, device="cpu")
    train_classifier(classifier, train.images, train.labels, TrainConfig(epochs=5, lr=3e-3, seed=0))
    return classifier


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread: on cores shared with other jobs, two OpenMP threads are several times slower."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def retraining_case():
    """Planted data, a 2-epoch config, a seeded untrained model and a copy of its initial weights: what the
    methods that retrain from the initial weights (JTT, the loop with restart) are checked against."""
    data, _ = make_shortcut_dataset(96, 32, cue_rate=0.9, signal=0.5, seed=5)
    torch.manual_seed(0)
    model = load_model("test_efficientnet", weights=None, class_names=data.class_names, device="cpu")
    initial = {key: value.clone() for key, value in model.model.state_dict().items()}
    return data, TrainConfig(epochs=2, batch_size=16, lr=3e-3, seed=1), model, initial


@pytest.fixture
def tiny_finetune(tmp_path) -> tuple[Path, list[str]]:
    """A procedural folder (label ``shape``, no groups) and ``weakspot finetune`` arguments for 2 epochs on the
    planted-shortcut benchmark built from it (``data shortcut`` layout: split and cue columns); add ``--method``
    and ``--out``. What the staged methods' command-line runs are checked on."""
    source, _ = make_shortcut_dataset(80, 32, cue_rate=0.5, signal=1.0, seed=9)
    source.groups = {}
    source_dir = write_imageset(source, tmp_path / "source", label="shape")
    bench = tmp_path / "bench"
    build_shortcut_benchmark(source_dir, "shape", bench, size=32, seed=0)
    return source_dir, ["finetune", "--data", str(bench), "--label", "shape", "--size", "32", "--model",
                        "test_efficientnet", "--weights", "none", "--epochs", "2", "--batch-size", "16",
                        "--no-progress", "--device", "cpu", "--keep", "last"]
