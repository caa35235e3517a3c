import pytest
import torch

from weakspot.augment.adversarial import AdversarialAugment
from weakspot.augment.baselines import create_method
from weakspot.errors import WeakspotError


def test_rounds_attack_after_warmup_and_keep_fooling_images_with_true_labels(button_data, button_model):
    _, test, _ = button_data
    images, labels = test.images[:16], test.labels[:16]
    # The attack's own defaults (attack_options={}): the loop's cheaper ones are tuned for 96 px photos.
    loop = AdversarialAugment(images, labels, attacks=("superpixel",), fraction=1.0, budget=80, mix_ratio=0.5,
                              warmup_epochs=1, attack_options={}, seed=0)
    loop.start_epoch(0, button_model)
    assert loop.history == [] and len(loop.pool_labels) == 0
    batch, batch_labels = loop(images[:8], labels[:8], button_model)
    assert batch.shape[0] == 8  # nothing to mix in before the first round
    loop.start_epoch(1, button_model)
    assert loop.history[0].fooled["superpixel"] == len(loop.pool_labels) >= 14
    predicted, _ = button_model.predict(loop.pool_images)
    assert bool((predicted != loop.pool_labels).all())  # every pool image fools the model
    assert set(loop.pool_labels.tolist()) <= set(labels.tolist())
    torch.manual_seed(0)
    mixed, mixed_labels = loop(images[:8], labels[:8], button_model)
    assert mixed.shape[0] == 12 and torch.equal(mixed[:8], images[:8])
    again = AdversarialAugment(images, labels, attacks=("superpixel",), fraction=1.0, budget=80, attack_options={},
                               seed=0)
    again.start_epoch(1, button_model)
    assert torch.equal(again.pool_images, loop.pool_images)  # a resumed run rebuilds the same pool


def test_pool_draws_are_class_balanced(button_data):
    _, test, _ = button_data
    loop = AdversarialAugment(test.images[:4], test.labels[:4], mix_ratio=1.0)
    loop.pool_images = torch.zeros(10, 3, 4, 4)
    loop.pool_labels = torch.tensor([0] * 9 + [1])
    torch.manual_seed(0)
    _, labels = loop(torch.zeros(2000, 3, 4, 4), torch.zeros(2000, dtype=torch.long), None)
    share_of_rare_class = float((labels[2000:] == 1).float().mean())
    assert 0.45 < share_of_rare_class < 0.55


def test_adversarial_method_validates_its_parameters(button_data):
    _, test, _ = button_data
    with pytest.raises(WeakspotError, match="fraction in"):
        create_method("adversarial", images=test.images, labels=test.labels, fraction=0.0)
    with pytest.raises(WeakspotError, match="at least one attack"):
        AdversarialAugment(test.images, test.labels, attacks=())


def test_rounds_caps_the_attack_rounds_and_keeps_the_last_pool(button_data):
    _, test, _ = button_data
    loop = AdversarialAugment(test.images[:4], test.labels[:4], warmup_epochs=1, refresh=2, rounds=2)
    assert [epoch for epoch in range(8) if loop.is_round(epoch)] == [1, 3]
    assert [epoch for epoch in range(6) if AdversarialAugment(test.images[:4], test.labels[:4]).is_round(epoch)] == [1, 2, 3, 4, 5]
    with pytest.raises(WeakspotError, match="rounds >= 1"):
        AdversarialAugment(test.images[:4], test.labels[:4], rounds=0)


def test_attack_options_reach_the_attacks(button_data, button_model):
    _, test, _ = button_data
    loop = AdversarialAugment(test.images[:2], test.labels[:2], attacks=("superpixel",), warmup_epochs=0,
                              attack_options={"superpixel": {"n_segmentz": 12}})
    with pytest.raises(WeakspotError, match="attack 'superpixel'.*n_segmentz"):
        loop.start_epoch(0, button_model)


def test_cached_explanations_are_reused_by_later_rounds(button_data, button_model):
    _, test, _ = button_data
    images, labels = test.images[:12], test.labels[:12]
    loop = AdversarialAugment(images, labels, attacks=("superpixel", "flip"), fraction=1.0, budget=80,
                              warmup_epochs=0, attack_options={}, cache_explanations=True)
    loop.start_epoch(0, button_model)
    before = button_model.images_evaluated
    loop.start_epoch(1, button_model)  # same model, same images: every explanation comes from the cache
    second_round_queries = button_model.images_evaluated - before
    assert loop.history[0].explanations_reused == 0
    assert loop.history[1].explanations_reused == loop.guidance_cache.misses > 0
    assert loop.history[1].fooled == loop.history[0].fooled
    uncached = AdversarialAugment(images, labels, attacks=("superpixel", "flip"), fraction=1.0, budget=80,
                                  warmup_epochs=0, attack_options={})
    before = button_model.images_evaluated
    uncached.start_epoch(1, button_model)
    assert second_round_queries < button_model.images_evaluated - before
    assert torch.equal(uncached.pool_images, loop.pool_images)
