"""The label-free peers the loop is compared with: AFR (``weakspot.augment.afr``) and SPARE through SpuCo
(``weakspot.augment.spare``); SpuCo's tests skip when the optional extra is absent."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch

from weakspot.augment.afr import Afr, afr_weights
from weakspot.augment.spare import Spare, spare_groups, spare_weights
from weakspot.cli import main
from weakspot.errors import WeakspotError
from weakspot.models import Classifier

from tests.test_oracles import TwoFeatures, two_feature_images

pytestmark = pytest.mark.usefixtures("one_thread")


def test_afr_weights_favour_what_erm_gets_wrong_and_balance_the_classes():
    logits = torch.tensor([[4.0, 0.0], [0.0, 0.0], [-4.0, 0.0], [0.0, 4.0], [0.0, -4.0]], dtype=torch.float64)
    labels = torch.tensor([0, 0, 0, 1, 1])
    weights = afr_weights(logits, labels, torch.tensor([0.0, 5.0], dtype=torch.float64))
    assert torch.allclose(weights.sum(dim=1), torch.ones(2, dtype=torch.float64))
    # gamma 0: the same weight within a class, each class half the total (divided by its size)
    assert torch.allclose(weights[0], torch.tensor([1 / 6] * 3 + [1 / 4] * 2, dtype=torch.float64))
    assert weights[1, 2] > weights[1, 1] > weights[1, 0] and weights[1, 4] > weights[1, 3]


def _cue_reading_classifier() -> Classifier:
    classifier = Classifier(TwoFeatures(), "two_features", ["a", "b"], device="cpu")
    with torch.no_grad():  # a head that leans on the cue more than on the core feature, as ERM would
        classifier.model.head.weight.copy_(torch.tensor([[-0.5, -1.5], [0.5, 1.5]]))
        classifier.model.head.bias.copy_(torch.tensor([1.0, -1.0]))
    return classifier


def test_afr_retrains_the_head_toward_the_images_erm_gets_wrong():
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(1000) % 2
    cue = torch.where(torch.rand(1000, generator=generator) < 0.9, labels, 1 - labels)
    images = two_feature_images(labels, cue, generator)
    val_labels = torch.arange(200) % 2
    val_cue = torch.where(torch.rand(200, generator=generator) < 0.9, val_labels, 1 - val_labels)
    val_images = two_feature_images(val_labels, val_cue, generator)
    conflicting_labels = torch.arange(400) % 2
    conflicting = two_feature_images(conflicting_labels, 1 - conflicting_labels, generator)
    classifier = _cue_reading_classifier()
    before = float((classifier.predict(conflicting)[0] == conflicting_labels).float().mean())
    groups = [f"{int(label)}/{int(c)}" for label, c in zip(val_labels, val_cue)]
    method = Afr(groups, seed=0)
    method.refit_head(classifier, images, labels, val_images, val_labels)
    after = float((classifier.predict(conflicting)[0] == conflicting_labels).float().mean())
    assert after > before + 0.2, (before, after, method.details)
    assert method.details["val_score"] > method.details["val_score_erm_head"]
    assert method.details["reweighted_images"] == 200 and method.details["erm_images"] == 800
    assert method.details["chosen_on"] == "validation worst group"


def test_afr_holds_out_a_seeded_part_of_the_training_split():
    method = Afr(seed=3)
    erm, held = method._split(50)
    assert len(held) == 10 and sorted(torch.cat([erm, held]).tolist()) == list(range(50))
    assert torch.equal(Afr(seed=3)._split(50)[1], held) and not torch.equal(Afr(seed=4)._split(50)[1], held)
    with pytest.raises(WeakspotError, match="held-out share"):
        Afr(holdout=1.0)
    with pytest.raises(WeakspotError, match="validation"):
        method.check(None, None, None)


def test_spare_weights_draw_small_clusters_more_and_balance_the_classes():
    labels = torch.tensor([0] * 8 + [1] * 4)
    partition = {(0, 0): [0, 1, 2, 3, 4, 5], (0, 1): [6, 7], (1, 0): [8, 9, 10], (1, 1): [11]}
    weights = spare_weights(partition, {0: 2, 1: 1}, labels)
    assert float(weights[:8].sum()) == pytest.approx(1.0) and float(weights[8:].sum()) == pytest.approx(1.0)
    assert float(weights[6] / weights[0]) == pytest.approx((6 / 2) ** 2)  # power 2: the cluster-size ratio squared
    assert float(weights[11] / weights[8]) == pytest.approx(3.0)  # power 1


def test_spare_without_spuco_is_a_one_line_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "spuco", None)
    monkeypatch.setitem(sys.modules, "spuco.group_inference", None)
    with pytest.raises(WeakspotError, match=r"weakspot\[peers\]"):
        spare_groups(np.zeros((4, 2)), [0, 0, 1, 1], 4, 0)


def test_spuco_spare_clusters_what_the_early_model_separates_and_leaves_the_rngs_alone():
    pytest.importorskip("spuco", reason="SpuCo is the optional extra weakspot[peers]")
    generator = np.random.default_rng(0)
    # class 0: a big confident cluster and a small unsure one; class 1: one cluster
    probabilities = np.concatenate([np.full((40, 2), [0.95, 0.05]), np.full((8, 2), [0.4, 0.6]),
                                    np.full((30, 2), [0.1, 0.9])]) + generator.normal(0, 0.01, (78, 2))
    labels = [0] * 48 + [1] * 30
    torch.manual_seed(123)
    expected = torch.rand(1)
    torch.manual_seed(123)
    partition, powers = spare_groups(probabilities, labels, 4, seed=0)
    assert torch.equal(torch.rand(1), expected)  # SpuCo seeds the global generators; they are restored
    sizes = sorted(len(members) for (label, _), members in partition.items() if label == 0)
    assert sizes[:1] == [8] and sum(sizes) == 48
    assert set(powers) == {0, 1}


def test_spuco_jtt_inference_finds_the_error_set_weakspots_jtt_upweights(retraining_case):
    pytest.importorskip("spuco", reason="SpuCo is the optional extra weakspot[peers]")
    from spuco.group_inference import JTTInference

    from weakspot.augment.jtt import Jtt

    data, config, model, _ = retraining_case
    method = Jtt(upweight=20.0)
    weights, _ = method.prepare_retraining(model, data.images, data.labels)
    predicted, _ = model.predict(data.images)
    partition = JTTInference(predictions=predicted.tolist(), class_labels=data.labels.tolist()).infer_groups()
    assert sorted(partition[(0, 1)]) == torch.nonzero(weights == 20.0).flatten().tolist()
    assert method.details["error_set"] == len(partition[(0, 1)])


def test_finetune_runs_afr_and_spare_with_or_without_group_labels(tmp_path, tiny_finetune):
    source_dir, common = tiny_finetune
    assert main([*common, "--method", "afr", "--out", str(tmp_path / "afr")]) == 0
    results = json.loads((tmp_path / "afr" / "results.json").read_text())
    details = results["method_details"]
    assert details["chosen_on"] == "validation worst group" and details["gamma"] > 0
    assert [entry["stage"] for entry in results["history"]] == ["erm", "erm"]
    assert (tmp_path / "afr" / "erm" / "last.pt").is_file() and (tmp_path / "afr" / "model.pt").is_file()
    # a folder with no group column: gamma and lambda are chosen on the validation worst class
    plain = [*common[:2], str(source_dir), *common[3:]]
    assert main([*plain, "--method", "afr", "--out", str(tmp_path / "afr_plain")]) == 0
    details = json.loads((tmp_path / "afr_plain" / "results.json").read_text())["method_details"]
    assert details["chosen_on"] == "validation worst class"
    assert main([*common, "--method", "afr", "--balance-recall", "on", "--out", str(tmp_path / "x")]) == 2
    if "spuco" in sys.modules or _spuco_installed():
        assert main([*common, "--method", "spare", "--spare-epochs", "1", "--out", str(tmp_path / "spare")]) == 0
        details = json.loads((tmp_path / "spare" / "results.json").read_text())["method_details"]
        assert sum(details["clusters"].values()) > 0 and set(details["sampling_powers"]) == {"tall", "wide"}


def _spuco_installed() -> bool:
    from importlib.util import find_spec

    return find_spec("spuco") is not None


def test_spare_refuses_settings_it_cannot_run():
    with pytest.raises(WeakspotError, match="spare"):
        Spare(identification_epochs=0)
    with pytest.raises(WeakspotError, match="spare"):
        Spare(max_clusters=1)
