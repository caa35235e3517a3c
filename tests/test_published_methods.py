"""MaskTune and JTT (``weakspot.augment.masktune``, ``weakspot.augment.jtt``) and ``fit``'s sample weights."""

from __future__ import annotations

import json

import pytest
import torch

from weakspot.augment.jtt import Jtt
from weakspot.augment.masktune import MaskTune, saliency_masks
from weakspot.cli import main
from weakspot.errors import WeakspotError
from weakspot.explainers.gradcam import XGradCam
from weakspot.models import load_model
from weakspot.training.loop import TrainConfig, fit
from weakspot.training.steps import epoch_batches

pytestmark = pytest.mark.usefixtures("one_thread")


def test_masks_threshold_at_mean_plus_two_std_of_the_positive_heat(button_model, monkeypatch):
    heat = torch.zeros(2, 10, 10)
    heat[0, :5] = 1.0  # 50 pixels at 1, 50 at 0: positive values all 1, std 0 -> nothing above the mean
    heat[1, 5:] = 0.2
    heat[1, 2:5, 6:9] = 1.0  # a 3 x 3 hot spot, half the background warm: the spot alone is above the threshold
    monkeypatch.setattr(XGradCam, "cam", lambda self, images, target: heat[: len(images)])
    masks = saliency_masks(button_model, torch.zeros(2, 3, 10, 10), torch.zeros(2, dtype=torch.long))
    positive = heat[1][heat[1] > 0]
    threshold = positive.mean() + 2 * positive.std(unbiased=False)
    assert not masks[0].any()
    assert torch.equal(masks[1], heat[1] > threshold) and int(masks[1].sum()) == 9


def test_masktune_masks_cover_the_planted_button(gradcam_button_model, gradcam_button_data):
    _, test, boxes = gradcam_button_data
    with_button = torch.nonzero(test.labels == 1).flatten()[:24]
    masks = saliency_masks(gradcam_button_model, test.images[with_button], test.labels[with_button], layer="layer3")
    covered = []
    for mask, (y0, x0, y1, x1) in zip(masks, boxes[with_button].tolist()):
        covered.append(bool(mask[y0:y1, x0:x1].any()))
    assert sum(covered) >= 0.9 * len(covered)
    assert masks.float().mean() < 0.15  # a few hot pixels per image, not the image


def test_masktune_maps_come_from_the_stage_closest_to_the_papers_resolution(button_model, gradcam_button_model):
    from weakspot.augment.masktune import saliency_layer

    assert saliency_layer(gradcam_button_model, 128) == "layer3"  # stride 16: 8 x 8 (layer4: 4 x 4)
    assert saliency_layer(button_model, 48) == "blocks.2"  # stride 8: 6 x 6
    assert saliency_layer(button_model, 4) is None


def test_sample_weights_draw_the_upweighted_images_in_proportion():
    weights = torch.ones(100)
    weights[:10] = 9.0  # 90 of 180 weight units: half of every epoch
    config = TrainConfig(batch_size=1000, seed=3)
    drawn = torch.cat([epoch_batches(100, config, epoch, 0, 1, weights)[0] for epoch in range(40)])
    assert len(drawn) == 4000 and abs(float((drawn < 10).float().mean()) - 0.5) < 0.04
    assert torch.equal(epoch_batches(100, config, 0, 0, 1, weights)[0], epoch_batches(100, config, 0, 0, 1, weights)[0])
    classifier = load_model("test_efficientnet", weights=None, class_names=["a", "b"], device="cpu")
    with pytest.raises(WeakspotError, match="sample weights"):
        fit(classifier, torch.zeros(4, 3, 8, 8), torch.zeros(4, dtype=torch.long), config, sample_weights=torch.zeros(4))


def test_jtt_retrains_from_the_initial_weights_with_its_error_set_upweighted(retraining_case):
    data, config, jtt_model, initial = retraining_case
    method = Jtt(upweight=20.0, identification_epochs=1)
    result = method.fit(jtt_model, data.images, data.labels, config)
    assert [entry["stage"] for entry in result.history] == ["identification", "retrain", "retrain"]

    reference = load_model("test_efficientnet", weights=None, class_names=data.class_names, device="cpu")
    reference.model.load_state_dict(initial)
    fit(reference, data.images, data.labels, TrainConfig(epochs=1, batch_size=16, lr=3e-3, seed=1, keep="last"))
    errors = reference.predict(data.images)[0] != data.labels
    assert method.details["error_set"] == int(errors.sum()) > 0
    reference.model.load_state_dict(initial)
    fit(reference, data.images, data.labels, config, sample_weights=torch.where(errors, 20.0, 1.0))
    for key, value in reference.model.state_dict().items():
        assert torch.equal(value, jtt_model.model.state_dict()[key]), key
    with pytest.raises(WeakspotError, match="upweight"):
        Jtt(upweight=0.5)
    with pytest.raises(WeakspotError, match="masktune"):
        MaskTune(finetune_lr=-1.0)


def test_finetune_masktune_and_jtt_write_their_stages_and_resume(tmp_path, tiny_finetune):
    _, common = tiny_finetune
    assert main([*common, "--method", "masktune", "--out", str(tmp_path / "mt")]) == 0
    results = json.loads((tmp_path / "mt" / "results.json").read_text())
    assert [entry["stage"] for entry in results["history"]] == ["erm", "erm", "masked"]
    assert 0 < results["method_details"]["masked_share"] < 0.3 and results["method_details"]["layer"] == "blocks.1"
    assert (tmp_path / "mt" / "erm" / "last.pt").is_file() and (tmp_path / "mt" / "last.pt").is_file()
    assert {(row["group"]["shape"], row["group"]["cue"]) for row in results["val"]["groups"]} >= {("wide", "button")}
    assert main([*common, "--method", "masktune", "--out", str(tmp_path / "mt"), "--resume"]) == 0
    resumed = json.loads((tmp_path / "mt" / "results.json").read_text())
    assert resumed["test"] == results["test"]  # both stages finished: resumed to zero epochs, same weights
    assert "recall_balance" not in resumed  # MaskTune trains as published unless asked
    assert main([*common, "--method", "masktune", "--out", str(tmp_path / "mt"), "--resume", "--balance-recall", "on"]) == 0
    balanced = json.loads((tmp_path / "mt" / "results.json").read_text())
    assert set(balanced["recall_balance"]["bias"]) == {"tall", "wide"}  # the last stage's model only
    assert (tmp_path / "mt" / "balanced.pt").is_file() and not (tmp_path / "mt" / "erm" / "balanced.pt").exists()

    assert main([*common, "--method", "jtt", "--jtt-upweight", "20", "--out", str(tmp_path / "jtt")]) == 0
    results = json.loads((tmp_path / "jtt" / "results.json").read_text())
    assert [entry["stage"] for entry in results["history"]] == ["identification"] * 2 + ["retrain"] * 2
    assert results["method_details"]["upweight"] == 20.0
    # the identification model is ERM over the run's epochs: an ERM run's last.pt gives the same retrain
    assert main([*common, "--method", "erm", "--out", str(tmp_path / "erm")]) == 0
    assert main([*common, "--method", "jtt", "--jtt-upweight", "20", "--jtt-identification",
                 str(tmp_path / "erm" / "last.pt"), "--out", str(tmp_path / "jtt-reused")]) == 0
    reused = json.loads((tmp_path / "jtt-reused" / "results.json").read_text())
    assert [entry["stage"] for entry in reused["history"]] == ["retrain"] * 2
    assert reused["test"] == results["test"] and reused["method_details"]["error_set"] == results["method_details"]["error_set"]
    assert main([*common, "--method", "jtt", "--out", str(tmp_path / "nothing"), "--resume"]) == 2
