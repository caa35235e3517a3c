import numpy as np
import pytest
import torch

from weakspot.attacks import create_attack
from weakspot.augment import adversarial
from weakspot.augment.adversarial import (DEFAULT_SPREAD_LEAD, ZONE_SHARE, AdversarialAugment, ZoneRule,
                                          collect_adversarial, confirm_cue_classes, cue_conflicts, cue_zone,
                                          transplant_cues)
from weakspot.augment.baselines import create_method
from weakspot.augment.restart import AdversarialRestart
from weakspot.errors import WeakspotError
from weakspot.fills import fill_images
from weakspot.models import load_model
from weakspot.shortcut import make_shortcut_dataset
from weakspot.training.loop import TrainConfig, fit


def test_rounds_attack_after_warmup_and_keep_fooling_images_with_true_labels(button_data, button_model):
    _, test, _ = button_data
    images, labels = test.images[:16], test.labels[:16]
    # The attack's own defaults (attack_options={}): the loop's cheaper ones are tuned for 96 px photos.
    loop = AdversarialAugment(images, labels, attacks=("superpixel",), fraction=1.0, budget=80, mix_ratio=0.5,
                              warmup_epochs=1, attack_options={}, seed=0)
    loop.start_step(0, button_model)
    assert loop.history == [] and len(loop.pool_labels) == 0
    batch, batch_labels = loop(images[:8], labels[:8], button_model)
    assert batch.shape[0] == 8  # nothing to mix in before the first round
    loop.start_step(1, button_model)
    assert loop.history[0].fooled["superpixel"] == len(loop.pool_labels) >= 14
    predicted, _ = button_model.predict(loop.pool_images)
    assert bool((predicted != loop.pool_labels).all())  # every pool image fools the model
    assert set(loop.pool_labels.tolist()) <= set(labels.tolist())
    torch.manual_seed(0)
    mixed, mixed_labels = loop(images[:8], labels[:8], button_model)
    assert mixed.shape[0] == 12 and torch.equal(mixed[:8], images[:8])
    again = AdversarialAugment(images, labels, attacks=("superpixel",), fraction=1.0, budget=80, warmup_epochs=1,
                               attack_options={}, seed=0)
    again.start_step(1, button_model)
    assert torch.equal(again.pool_images, loop.pool_images)  # a resumed run rebuilds the same pool


def test_pool_draws_are_class_balanced_and_source_balanced_within_a_class(button_data):
    _, test, _ = button_data
    loop = AdversarialAugment(test.images[:4], test.labels[:4], mix_ratio=1.0)
    loop.pool_images = torch.arange(10.0)[:, None, None, None].expand(10, 3, 4, 4)
    loop.pool_labels = torch.tensor([0] * 9 + [1])
    loop.pool_sources = torch.tensor([0] * 8 + [1, 1])  # class 0: 8 removals, 1 transplant
    torch.manual_seed(0)
    mixed, labels = loop(torch.zeros(2000, 3, 4, 4), torch.zeros(2000, dtype=torch.long), None)
    share_of_rare_class = float((labels[2000:] == 1).float().mean())
    assert 0.45 < share_of_rare_class < 0.55
    # within class 0, half the draws are its one transplant (image 8)
    share_of_transplant = float((mixed[2000:, 0, 0, 0] == 8).float().mean())
    assert 0.2 < share_of_transplant < 0.3


def test_adversarial_method_validates_its_parameters(button_data):
    _, test, _ = button_data
    with pytest.raises(WeakspotError, match="fraction in"):
        create_method("adversarial", images=test.images, labels=test.labels, fraction=0.0)
    with pytest.raises(WeakspotError, match="at least one attack"):
        AdversarialAugment(test.images, test.labels, attacks=())


def test_rounds_caps_the_attack_rounds_and_keeps_the_last_pool(button_data):
    _, test, _ = button_data
    loop = AdversarialAugment(test.images[:4], test.labels[:4], warmup_epochs=1, refresh=2, rounds=2)
    assert [loop.due_round(epoch) for epoch in (1, 3, 7)] == [0, 1, 1]  # the latest due round; none after 2

    def rounds_run(loop: AdversarialAugment, steps_per_epoch: int, epochs: int) -> list[float]:
        """Where ``fit`` would run rounds: one ``start_step`` per step, the attack itself stubbed out."""
        started = []
        for step in range(steps_per_epoch * epochs):
            progress = step / steps_per_epoch
            if (index := loop.due_round(progress)) is not None:
                loop.last_round = index
                started.append(progress)
        return started

    images, labels = test.images[:4], test.labels[:4]
    assert rounds_run(AdversarialAugment(images, labels, warmup_epochs=1, refresh=2, rounds=2), 4, 8) == [1, 3]
    assert rounds_run(AdversarialAugment(images, labels), 4, 4) == [1.5]  # the defaults
    assert rounds_run(AdversarialAugment(images, labels, warmup_epochs=1, refresh=1, rounds=None), 4, 4) == [1, 2, 3]
    assert rounds_run(AdversarialAugment(images, labels, warmup_epochs=0.5, refresh=1, rounds=2), 4, 3) == [0.5, 1.5]
    assert rounds_run(AdversarialAugment(images, labels, warmup_epochs=0.4, refresh=0.8, rounds=None), 3, 2) == [2 / 3,
                                                                                                            4 / 3]
    retried = AdversarialAugment(images, labels, warmup_epochs=1, refresh=1, rounds=1)
    assert retried.due_round(1) == 0
    retried.last_round = 0
    assert retried.due_round(2) is None
    retried.empty_rounds = 1  # round 0 kept nothing: it does not count
    assert retried.due_round(1.5) is None and retried.due_round(2) == 1
    resumed = AdversarialAugment(images, labels, warmup_epochs=0.5, refresh=1, rounds=None)
    assert resumed.due_round(2.0) == 1 and resumed.due_round(2.0) == 1  # resumed at epoch 2: round 1 again
    with pytest.raises(WeakspotError, match="refresh > 0"):
        AdversarialAugment(images, labels, refresh=0)
    with pytest.raises(WeakspotError, match="rounds >= 1"):
        AdversarialAugment(test.images[:4], test.labels[:4], rounds=0)
    with pytest.raises(WeakspotError, match="gate in"):
        AdversarialAugment(test.images[:4], test.labels[:4], gate=1.5)


@pytest.mark.parametrize("start_shifted", [False, True])
def test_alternate_grids_switches_the_guidance_grid_every_round(button_data, button_model, monkeypatch, start_shifted):
    """Round k explains on the grid the loop starts with when k is even and on the other one when k is odd,
    whatever earlier rounds kept (a resumed run knows only k); each round records its grid."""
    _, test, _ = button_data
    given = []

    def recording(*args, **kwargs):
        given.append(kwargs["guidance_shift"])
        return collect_adversarial(*args, **kwargs)

    monkeypatch.setattr(adversarial, "collect_adversarial", recording)
    loop = AdversarialAugment(test.images[:6], test.labels[:6], attacks=("button",), fraction=1.0, budget=40,
                              warmup_epochs=0, refresh=1, rounds=None, guidance_shift=start_shifted,
                              alternate_grids=True, fallback_grid=False)
    for round_index in range(3):
        loop.run_round(button_model, round_index, float(round_index))
    expected = [start_shifted, not start_shifted, start_shifted]
    assert given == expected == [entry.shifted_grid for entry in loop.history]
    fixed = AdversarialAugment(test.images[:6], test.labels[:6], attacks=("button",), fraction=1.0, budget=40,
                               warmup_epochs=0, refresh=1, rounds=None, guidance_shift=start_shifted,
                               alternate_grids=False, fallback_grid=False)
    fixed.run_round(button_model, 1, 1.0)
    assert fixed.history[0].shifted_grid == start_shifted


def test_a_retry_that_confirms_nothing_on_its_grid_falls_back_to_the_other(button_data, button_model, monkeypatch):
    """With ``fallback_grid``, a round after the first whose grid keeps nothing explains the same images on the
    other grid and keeps that harvest; round 0, a round whose grid kept something, and the loop without the
    fallback explain once."""
    _, test, _ = button_data
    images, labels = test.images[:6], test.labels[:6]
    given = []
    nothing = adversarial.Harvest(images[:0], labels[:0], {}, adversarial.CueBank.empty(images),
                                  torch.empty(0, dtype=torch.long), labels[:0])
    found = adversarial.Harvest(images[:2], labels[:2], {"button": 2}, adversarial.CueBank.empty(images),
                                torch.zeros(2, dtype=torch.long), labels[:2])

    def regular_grid_finds_nothing(*args, **kwargs):
        given.append((kwargs["seed"], kwargs["guidance_shift"]))
        return found if kwargs["guidance_shift"] else nothing

    monkeypatch.setattr(adversarial, "collect_adversarial", regular_grid_finds_nothing)
    options = dict(attacks=("button",), fraction=1.0, budget=40, warmup_epochs=0, refresh=1, rounds=None,
                   alternate_grids=False, seed=3)
    loop = AdversarialAugment(images, labels, fallback_grid=True, **options)
    for round_index in range(2):
        loop.run_round(button_model, round_index, float(round_index))
    first, retry = 3 * 1_000_003, 3 * 1_000_003 + 1
    assert given == [(first, False), (retry, False), (retry, True)]
    assert [(entry.grids_tried, entry.shifted_grid) for entry in loop.history] == [(1, False), (2, True)]
    assert torch.equal(loop.pool_images, found.images) and loop.history[1].fooled == {"button": 2}
    given.clear()
    shifted_start = AdversarialAugment(images, labels, fallback_grid=True, **{**options, "alternate_grids": True})
    shifted_start.run_round(button_model, 1, 1.0)  # round 1 on the shifted grid keeps something: no fallback
    assert given == [(retry, True)] and shifted_start.history[0].grids_tried == 1
    given.clear()
    AdversarialAugment(images, labels, fallback_grid=False, **options).run_round(button_model, 1, 1.0)
    assert given == [(retry, False)]


def test_a_round_that_keeps_something_asks_for_the_learning_rate_restart(button_data, button_model, monkeypatch):
    """``start_step`` returns True (``fit`` restarts the decay) after a round that kept something, with
    ``lr_restart``; a round that kept nothing, a step without a round, and the loop without it return False."""
    _, test, _ = button_data
    images, labels = test.images[:6], test.labels[:6]
    harvests = iter([adversarial.Harvest(images[:0], labels[:0], {}, adversarial.CueBank.empty(images),
                                         torch.empty(0, dtype=torch.long), labels[:0]),
                     adversarial.Harvest(images[:2], labels[:2], {"button": 2}, adversarial.CueBank.empty(images),
                                         torch.zeros(2, dtype=torch.long), labels[:2])] * 2)
    monkeypatch.setattr(adversarial, "collect_adversarial", lambda *args, **kwargs: next(harvests))
    options = dict(attacks=("button",), fraction=1.0, warmup_epochs=0, refresh=1, rounds=1, fallback_grid=False)
    loop = AdversarialAugment(images, labels, lr_restart=True, **options)
    assert [loop.start_step(progress, button_model) for progress in (0.0, 0.5, 1.0, 1.5)] == [False, False, True,
                                                                                               False]
    plain = AdversarialAugment(images, labels, lr_restart=False, **options)
    assert not any(plain.start_step(progress, button_model) for progress in (0.0, 1.0))


def gated_harvest(images: torch.Tensor, labels: torch.Tensor, leads: dict[int, float], gate: float = 0.15
                  ) -> adversarial.Harvest:
    """A round's harvest with one cue and one transplant per class of ``leads`` that passed ``gate`` (as
    ``collect_adversarial`` keeps them), each class's lead as given."""
    classes = torch.tensor(sorted(label for label, lead in leads.items() if lead >= gate), dtype=torch.long)
    masks = torch.zeros(len(classes), *images.shape[-2:], dtype=torch.bool)
    masks[:, :4, :4] = True
    bank = adversarial.CueBank(images[:len(classes)], masks, classes, ("median",) * len(classes))
    return adversarial.Harvest(images[:len(classes)], 1 - classes, {"button-transplant": len(classes)}, bank,
                               torch.zeros(len(classes), dtype=torch.long), classes,
                               {f"button:{label}": lead for label, lead in leads.items()})


@pytest.mark.parametrize("first, second, kept", [({0: 0.9, 1: 0.2}, {1: 0.05}, [0]),
                                                 ({0: 0.9, 1: 0.2}, {1: 0.12}, [0, 1]),
                                                 ({1: 0.2}, {}, []),
                                                 ({0: 0.4, 1: 0.35}, None, [0, 1])])
def test_gate_retest_keeps_a_marginal_class_only_when_two_samples_average_the_gate(
        button_data, button_model, monkeypatch, first, second, kept):
    """With ``gate_retest`` a class that led by under twice the gate (0.15) is tested on a second sample of other
    training images, and kept when the two leads average the gate (a class the second sample confirms nothing of
    leads by 0 there); a round with no marginal class draws no second sample."""
    _, test, _ = button_data
    images, labels = test.images[:12], test.labels[:12]
    harvests = [gated_harvest(images, labels, first), *([] if second is None else [gated_harvest(images, labels,
                                                                                                  second)])]
    calls = []

    def collect(classifier, round_images, *args, **kwargs):
        calls.append((round_images, kwargs["seed"]))
        return harvests[len(calls) - 1]

    monkeypatch.setattr(adversarial, "collect_adversarial", collect)
    loop = AdversarialAugment(images, labels, fraction=0.5, warmup_epochs=0, gate=0.15, conflicts=None,
                              gate_retest=True, seed=2)
    loop.run_round(button_model, 0, 0.0)
    assert len(calls) == len(harvests)
    if second is not None:
        first_rows = {tuple(image.flatten()[:8].tolist()) for image in calls[0][0]}
        assert not first_rows & {tuple(image.flatten()[:8].tolist()) for image in calls[1][0]}  # other images
        assert calls[1][1] != calls[0][1]
    assert sorted(loop.cues.labels.tolist()) == kept
    assert sorted(loop.pool_labels.tolist()) == sorted(1 - label for label in kept)
    assert loop.history[0].retest_lead == (harvests[-1].gate_lead if second is not None else {})
    assert loop.history[0].fooled["button-transplant"] == len(kept)


def test_retest_marginal_attacks_only_the_marginal_class_images_of_the_second_sample(
        button_data, button_model, monkeypatch):
    """With ``retest_marginal`` the second sample's images of the marginal class come first and only they are
    attacked; the rest of the sample is there as recipients. A sample with none of them confirms nothing."""
    _, test, _ = button_data
    images, labels = test.images[:24], test.labels[:24]
    calls = []

    def collect(classifier, round_images, round_labels, *args, **kwargs):
        calls.append((round_labels, kwargs["attacked"]))
        return gated_harvest(images, labels, {0: 0.9, 1: 0.2} if len(calls) == 1 else {1: 0.12})

    monkeypatch.setattr(adversarial, "collect_adversarial", collect)
    loop = AdversarialAugment(images, labels, fraction=0.5, warmup_epochs=0, gate=0.15, conflicts=None,
                              gate_retest=True, retest_marginal=True, seed=2)
    loop.run_round(button_model, 0, 0.0)
    (first_labels, first_attacked), (second_labels, attacked) = calls
    assert first_attacked is None and len(second_labels) == len(first_labels)
    assert 0 < attacked < len(second_labels) and attacked == int((second_labels == 1).sum())
    assert (second_labels[:attacked] == 1).all() and (second_labels[attacked:] == 0).all()
    assert sorted(loop.cues.labels.tolist()) == [0, 1]  # (0.2 + 0.12) / 2 >= 0.15
    calls.clear()
    only_zeros = AdversarialAugment(images[labels == 0], labels[labels == 0], fraction=0.5, warmup_epochs=0,
                                    gate=0.15, conflicts=None, gate_retest=True, retest_marginal=True, seed=2)
    only_zeros.run_round(button_model, 0, 0.0)
    assert len(calls) == 1 and sorted(only_zeros.cues.labels.tolist()) == [0]


def test_collect_adversarial_attacks_the_first_images_and_pastes_into_all(button_data, button_model):
    """``attacked``: only the leading images are attacked (their removals and cues are harvested); the others
    receive transplants and the dependence test's pastes."""
    _, test, _ = button_data
    images, labels = test.images[:32], test.labels[:32]
    order = torch.argsort(labels, descending=True, stable=True)  # the button's class (1) first
    images, labels = images[order], labels[order]
    buttoned = int((labels == 1).sum())
    options = {"button": {"fills": ("median",)}}
    harvest = collect_adversarial(button_model, images, labels, ("button",), 80, options, transplant=True,
                                  cues_only=True, gate=-1.0, seed=3, attacked=buttoned)
    alone = collect_adversarial(button_model, images[:buttoned], labels[:buttoned], ("button",), 80, options,
                                transplant=True, cues_only=True, gate=-1.0, seed=3)
    transplants = harvest.counts["button-transplant"]
    assert transplants >= 2 and (harvest.cues.labels == 1).all() and (harvest.labels[:transplants] == 0).all()
    assert (harvest.labels[transplants:] == 1).all() and (harvest.cue_classes == 1).all()
    result = create_attack("button", button_model, budget=80, fills=("median",))(images[:buttoned], labels[:buttoned])
    donors = [int(torch.nonzero((images[:buttoned] == cue).flatten(1).all(dim=1))[0]) for cue in harvest.cues.images]
    assert torch.equal(harvest.images[transplants:], result.adversarial[donors])  # removals of the attacked images
    assert alone.counts == {"button-transplant": 0, "button": 0}  # alone, a cue has no image of the other class


def test_attack_options_reach_the_attacks(button_data, button_model):
    _, test, _ = button_data
    loop = AdversarialAugment(test.images[:2], test.labels[:2], attacks=("superpixel",), warmup_epochs=0,
                              attack_options={"superpixel": {"n_segmentz": 12}})
    with pytest.raises(WeakspotError, match="attack 'superpixel'.*n_segmentz"):
        loop.start_step(0, button_model)


def test_cached_explanations_are_reused_by_later_rounds(button_data, button_model):
    _, test, _ = button_data
    images, labels = test.images[:12], test.labels[:12]
    loop = AdversarialAugment(images, labels, attacks=("superpixel", "flip"), fraction=1.0, budget=80,
                              warmup_epochs=0, refresh=1, rounds=None, attack_options={}, cache_explanations=True)
    loop.start_step(0, button_model)
    before = button_model.images_evaluated
    loop.start_step(1, button_model)  # same model, same images: every explanation comes from the cache
    second_round_queries = button_model.images_evaluated - before
    assert loop.history[0].explanations_reused == 0
    assert loop.history[1].explanations_reused == loop.guidance_cache.misses > 0
    assert loop.history[1].fooled == loop.history[0].fooled
    uncached = AdversarialAugment(images, labels, attacks=("superpixel", "flip"), fraction=1.0, budget=80,
                                  warmup_epochs=0, attack_options={})
    before = button_model.images_evaluated
    uncached.start_step(1, button_model)
    assert second_round_queries < button_model.images_evaluated - before
    assert torch.equal(uncached.pool_images, loop.pool_images)


def test_transplants_paste_an_erased_cue_into_the_other_class(button_data, button_model):
    """Class 1 = button: erasing it fools the model; pasting that region into a class-0 image gives a
    class-0 image the model calls 1, kept with its true label 0. Painted (black) patches are no donors."""
    _, test, _ = button_data
    images, labels = test.images[:16], test.labels[:16]
    generator = torch.Generator().manual_seed(0)
    result = create_attack("button", button_model, budget=80, fills=("median",))(images, labels)
    class_1_removals = int((result.fooled & (labels == 1)).sum())
    assert class_1_removals >= 4
    grafted, grafted_labels, donors, masks = transplant_cues(button_model, images, labels, result, 0.0, generator)
    assert len(grafted_labels) >= class_1_removals // 2 and (grafted_labels == 0).all()
    assert len(donors) == len(grafted_labels) and bool(result.fooled[donors].all()) and bool((labels[donors] == 1).all())
    assert (button_model.predict(grafted)[0].cpu() == 1).all()
    assert masks.shape == (len(donors), *images.shape[-2:]) and bool(masks.flatten(1).any(dim=1).all())
    assert torch.equal(torch.where(masks[:, None], images[donors], grafted), grafted)  # the donor's pixels inside
    recipients = images[labels == 0]
    for image in grafted:  # a class-0 image, changed only inside the pasted patches (at most 3 x 4%)
        unchanged = (recipients == image).all(dim=1).float().mean(dim=(1, 2))
        assert float(unchanged.max()) >= 0.87
    painted = create_attack("button", button_model, budget=80, fills=("black",))(images, labels)
    assert len(transplant_cues(button_model, images, labels, painted, 0.0, generator)[1]) == 0
    loop = AdversarialAugment(images, labels, attacks=("button",), fraction=1.0, budget=80, warmup_epochs=0,
                              attack_options={"button": {"fills": ("median",)}}, transplant=True, cues_only=False)
    loop.start_step(0, button_model)
    assert loop.history[0].fooled["button-transplant"] > 0
    assert len(loop.pool_labels) == sum(loop.history[0].fooled.values())


def test_cues_only_keeps_the_removals_whose_transplant_fooled(button_data, button_model, monkeypatch):
    """With ``cues_only`` a removal stays in the pool only when its erased region, pasted into an image of
    another class, fooled the model as well. On the toy every button transplant fools, so half of them are
    dropped here (a recipient the model would not be fooled on) to see the removals follow their donors."""
    _, test, _ = button_data
    images, labels = test.images[:16], test.labels[:16]
    options = {"button": {"fills": ("median",)}}
    real_transplant_cues = adversarial.transplant_cues

    def every_second_donor(*args, **kwargs):
        grafted, grafted_labels, donors, masks = real_transplant_cues(*args, **kwargs)
        return grafted[::2], grafted_labels[::2], donors[::2], masks[::2]

    monkeypatch.setattr(adversarial, "transplant_cues", every_second_donor)
    every = collect_adversarial(button_model, images, labels, ("button",), 80, options, transplant=True, seed=3)
    cues = collect_adversarial(button_model, images, labels, ("button",), 80, options, transplant=True,
                               cues_only=True, seed=3)
    result = create_attack("button", button_model, budget=80, fills=("median",))(images, labels)
    _, _, donors, _ = real_transplant_cues(button_model, images, labels, result, 0.0, torch.Generator().manual_seed(3))
    kept_donors = donors[::2]
    assert every.counts == {"button-transplant": len(kept_donors), "button": int(result.fooled.sum())}
    assert cues.counts == {"button-transplant": len(kept_donors), "button": len(kept_donors)} and len(kept_donors) >= 2
    transplants = len(kept_donors)
    assert torch.equal(cues.images[:transplants], every.images[:transplants])  # the same transplants, fewer removals
    assert torch.equal(cues.images[transplants:], result.adversarial[kept_donors])
    assert torch.equal(cues.labels[transplants:], labels[kept_donors])
    assert torch.equal(cues.cues.images, images[kept_donors]) and torch.equal(cues.cues.labels, labels[kept_donors])


def test_spread_pastes_or_erases_confirmed_cues_blind_to_the_label(button_data, button_model):
    """Every image gets one confirmed cue (probability 1), whatever its class: its class's cue zone pasted
    from the donor (the toy model then reads the button and says 1) or filled (the model then says 0);
    nothing else changes."""
    _, test, _ = button_data
    images, labels = test.images[:16], test.labels[:16]
    harvest = collect_adversarial(button_model, images, labels, ("button",), 80, {"button": {"fills": ("median",)}},
                                  transplant=True, cues_only=True)
    bank = harvest.cues
    assert len(bank) >= 2 and (bank.labels == 1).all() and set(bank.fills) == {"median"}
    batch, batch_labels = test.images[16:48], test.labels[16:48]
    assert torch.equal(bank.spread(batch, 0.0), batch)
    torch.manual_seed(0)
    spread = bank.spread(batch, 1.0)
    torch.manual_seed(0)
    torch.rand(len(batch))  # the same draws: who gets a cue (everyone at 1.0), which cue, paste or erase
    picked = torch.multinomial(torch.ones(len(bank)), len(batch), replacement=True)  # one class: uniform
    erase = torch.rand(len(batch)) < 0.5
    zone = cue_zone(bank.masks)  # every cue is a class-1 button here
    cover = bank.masks.float().mean(dim=0)
    shared = cover >= ZONE_SHARE * cover.max()  # as covered as a quarter of the peak
    assert zone[shared].all() and int(shared.sum()) < int(zone.sum()) < zone.numel() // 2  # grown, not the image
    sources = torch.where(erase[:, None, None, None], fill_images(batch, "median"), bank.images[picked])
    assert torch.equal(spread, torch.where(zone, sources, batch))
    for edit, said in ((~erase, 1), (erase, 0)):
        assert len(set(batch_labels[edit].tolist())) == 2  # both classes get both edits
        # erased: the zone removes most buttons, although buttons move by up to 6% between images
        assert float((button_model.predict(spread[edit])[0].cpu() == said).float().mean()) >= 0.7
    loop = AdversarialAugment(images, labels, attacks=("button",), fraction=1.0, budget=80, warmup_epochs=0,
                              attack_options={"button": {"fills": ("median",)}}, spread=1.0, spread_lead=None)
    loop.start_step(0, button_model)
    assert loop.history[0].cues == len(loop.cues) > 0
    assert loop.history[0].zone_share == {1: pytest.approx(float(loop.cues.zone_of[1].float().mean()))}
    assert 0 < loop.history[0].zone_share[1] < 0.5  # what the spread edits: recorded, as it costs clean accuracy
    assert loop.history[0].spread == 1.0
    mixed, mixed_labels = loop(batch, batch_labels, button_model)
    assert torch.equal(mixed_labels[:len(batch)], batch_labels) and not torch.equal(mixed[:len(batch)], batch)
    # with a spread lead, the spread is scaled by the round's largest lead over it (at most 1)
    scaled = AdversarialAugment(images, labels, attacks=("button",), fraction=1.0, budget=80, warmup_epochs=0,
                                attack_options={"button": {"fills": ("median",)}}, spread=1.0, spread_lead=4.0)
    scaled.start_step(0, button_model)
    lead = max(scaled.history[0].gate_lead.values())
    assert 0 < lead <= 1 and scaled.history[0].spread == pytest.approx(lead / 4.0) == scaled.round_spread
    assert AdversarialAugment(images, labels, spread_lead=0.01).round_spread == 1.0  # before a round: the spread
    assert AdversarialAugment(images, labels, spread_lead=0.3).spread_lead == 0.3
    assert AdversarialAugment(images, labels).spread_lead is DEFAULT_SPREAD_LEAD is None  # the full spread by default
    assert AdversarialAugment(images, labels, gate=None).spread_lead is None  # no dependence test, no lead
    with pytest.raises(WeakspotError, match="needs transplant"):
        AdversarialAugment(images, labels, spread=0.5, transplant=False)
    assert AdversarialAugment(images, labels, transplant=False).spread == 0.0  # the default follows transplant
    with pytest.raises(WeakspotError, match="spread in"):
        AdversarialAugment(images, labels, spread=1.5)


def test_swap_erase_puts_in_the_zone_of_a_batch_image_of_another_class():
    """With the batch's labels, an erased cue's zone comes from a batch image of another class than the cue's
    (its natural absence), a pasted one from the donor; a batch with no such image falls back to the fill."""
    masks = torch.zeros(2, 8, 8, dtype=torch.bool)
    masks[:, 2:4, 2:4] = True
    bank = adversarial.CueBank(torch.full((2, 3, 8, 8), 0.9), masks, torch.tensor([1, 1]), ("median", "median"))
    zone = bank.zone_of[1]
    batch = torch.arange(40, dtype=torch.float32).div(100).view(40, 1, 1, 1).expand(40, 3, 8, 8).clone()
    labels = torch.tensor([0, 1] * 20)
    torch.manual_seed(0)
    spread = bank.spread(batch, 1.0, labels)
    values = spread[:, 0][:, zone].unique(dim=1)
    assert values.shape[1] == 1  # one source per image's zone
    sources = values[:, 0]
    class_zero_values = batch[labels == 0, 0, 0, 0]
    pasted = torch.isclose(sources, torch.tensor(0.9))
    swapped = torch.isin(sources, class_zero_values)
    assert (pasted | swapped).all() and 10 < int(swapped.sum()) < 30  # a fair coin over 40 images
    assert torch.equal(spread[:, :, ~zone], batch[:, :, ~zone])
    only_cue_class = bank.spread(batch[labels == 1], 1.0, labels[labels == 1])  # nothing to swap in: the fill
    inside = only_cue_class[:, 0][:, zone]
    assert not torch.isin(inside, class_zero_values).any()


def test_zone_rules_share_of_the_cues_or_of_the_most_covered_pixel():
    """With few cues a share of the cues admits every stray patch; a share of the peak cover keeps where the cues
    agree. Growth widens the zone by that share of the side; the bank's zones follow its rule."""
    masks = torch.zeros(10, 20, 20, dtype=torch.bool)
    masks[:, 15:18, 8:11] = True  # where every cue sits
    masks[0, 0:4, 0:4] = True  # one cue's stray patch: 10% of the cues cover it
    of_cues = cue_zone(masks, ZoneRule(0.05, 0.0, least=1))
    of_peak = cue_zone(masks, ZoneRule(0.25, 0.0, "peak"))
    assert of_cues[0:4, 0:4].all() and int(of_cues.sum()) == 9 + 16
    assert not of_peak[0:4, 0:4].any() and int(of_peak.sum()) == 9
    assert int(cue_zone(masks, ZoneRule(0.25, 0.05, "peak")).sum()) == 25  # one pixel (5% of 20) each way
    bank = adversarial.CueBank(torch.rand(10, 3, 20, 20), masks, torch.ones(10, dtype=torch.long), ("median",) * 10)
    assert torch.equal(bank.with_zones(ZoneRule(0.25, 0.0, "peak")).zone_of[1], of_peak)
    assert torch.equal(bank.with_zones(ZoneRule(0.25, 0.0, "peak")).select(torch.ones(10, dtype=torch.bool)).zone_of[1],
                       of_peak)
    with pytest.raises(WeakspotError, match="cue zone"):
        ZoneRule(0.25, 0.0, "pixels")


def test_a_zone_of_few_cues_keeps_only_the_pixels_enough_of_them_share():
    """Four cues: a quarter of the peak cover is one cue, so each cue's stray box joins the zone unless ``least``
    asks for more cues; ``least`` above the peak's cover keeps the peak, not nothing."""
    masks = torch.zeros(4, 20, 20, dtype=torch.bool)
    masks[:3, 15:18, 8:11] = True  # three cues agree
    for index, corner in enumerate((0, 8, 16)):
        masks[index, corner:corner + 3, 0:3] = True  # each has a stray box of its own
    masks[3, 0:3, 15:18] = True  # the fourth is elsewhere
    assert int(cue_zone(masks, ZoneRule(0.25, 0.0, "peak", least=1)).sum()) == 9 * 5
    assert int(cue_zone(masks, ZoneRule(0.25, 0.0, "peak", least=2)).sum()) == 9
    assert torch.equal(cue_zone(masks, ZoneRule(growth=0.0)), cue_zone(masks, ZoneRule(0.25, 0.0, "peak", least=2)))
    at_least_five = cue_zone(masks, ZoneRule(0.25, 0.0, "peak", least=5))
    assert torch.equal(at_least_five, cue_zone(masks, ZoneRule(1.0, 0.0, "peak")))  # the peak's three cues
    with pytest.raises(WeakspotError, match="at least 1 cue"):
        ZoneRule(least=0)


def test_spread_draws_donors_class_balanced_and_an_empty_bank_draws_nothing(button_data, button_model):
    _, test, _ = button_data
    harvest = collect_adversarial(button_model, test.images[:16], test.labels[:16], ("button",), 80,
                                  {"button": {"fills": ("median",)}}, transplant=True, cues_only=True)
    assert torch.bincount(harvest.sources, minlength=len(harvest.counts)).tolist() == list(harvest.counts.values())
    bank = harvest.cues
    # nine tenths of the bank relabelled class 0: draws must still come half from each class
    masks = bank.masks[:1].repeat(10, 1, 1)
    masks[9] = False
    masks[9, :4, :4] = True  # the class-1 cue alone covers the top-left corner
    bank = adversarial.CueBank(bank.images[:1].repeat(10, 1, 1, 1), masks, torch.tensor([0] * 9 + [1]),
                               ("median",) * 10)
    batch = torch.zeros(4000, 3, 48, 48)
    torch.manual_seed(0)
    spread = bank.spread(batch, 1.0)
    corner_pasted = spread[:, :, 0, 0].abs().sum(dim=1) > 0
    share = float(corner_pasted.float().mean())  # pasted (half) x drawn from class 1 (half): about a quarter
    assert 0.2 < share < 0.3
    state = torch.get_rng_state()
    empty = adversarial.CueBank.empty(batch)
    assert torch.equal(empty.spread(batch[:8], 1.0), batch[:8])
    assert torch.equal(torch.get_rng_state(), state)


def test_an_attack_round_leaves_the_training_rng_untouched(button_data, button_model, monkeypatch):
    """A round draws from seeded generators only: training after a round that keeps nothing is ERM's."""
    _, test, _ = button_data
    loop = AdversarialAugment(test.images[:16], test.labels[:16], fraction=1.0, budget=80, warmup_epochs=0,
                              attack_options={"button": {"fills": ("median",)}}, seed=0)
    torch.manual_seed(5)
    state = torch.get_rng_state()
    loop.start_step(0, button_model)
    assert len(loop.history) == 1 and torch.equal(torch.get_rng_state(), state)
    assert loop.empty_rounds == 0 and len(loop.pool_labels)
    # every class's lead under the gate (a real lead can reach 1.0, the highest gate, on some machines' numerics)
    monkeypatch.setattr(adversarial, "confirm_cue_classes", lambda *args, **kwargs: {0: -1.0, 1: -1.0})
    strict = AdversarialAugment(test.images[:16], test.labels[:16], fraction=1.0, budget=80, warmup_epochs=0,
                                rounds=1, attack_options={"button": {"fills": ("median",)}}, gate=0.15, seed=0)
    strict.start_step(0, button_model)
    assert len(strict.pool_labels) == 0 and strict.empty_rounds == 1 and strict.due_round(1) == 1  # retried


def test_a_loop_that_keeps_nothing_trains_exactly_as_erm(button_data):
    """No round before the end (warm-up past the last epoch): the weights are ERM's, bit for bit."""
    train, _, _ = button_data
    images, labels = train.images[:48], train.labels[:48]
    config = TrainConfig(epochs=2, batch_size=16, lr=3e-3, seed=0, augment=True)  # augmentation draws from torch's RNG
    weights = []
    for transform in (None, AdversarialAugment(images, labels, warmup_epochs=5, seed=0)):
        torch.manual_seed(0)
        classifier = load_model("test_efficientnet", weights=None, class_names=train.class_names, device="cpu")
        fit(classifier, images, labels, config, transform=transform)
        weights.append(classifier.model.state_dict())
    assert all(torch.equal(weights[0][key], weights[1][key]) for key in weights[0])


def test_fit_runs_rounds_in_the_middle_of_epochs(button_data):
    """``fit`` calls ``start_step`` before every step: with a half-epoch warm-up the rounds run at 0.5 and
    1.5 epochs (4 steps per epoch), with the model in eval mode."""
    train, _, _ = button_data
    images, labels = train.images[:64], train.labels[:64]
    torch.manual_seed(0)
    classifier = load_model("test_efficientnet", weights=None, class_names=train.class_names, device="cpu")
    modes = []

    class Recorded(AdversarialAugment):
        def start_step(self, progress, classifier):
            if self.due_round(progress) is not None:
                modes.append(classifier.net.training)
            super().start_step(progress, classifier)

    loop = Recorded(images, labels, fraction=0.25, budget=40, warmup_epochs=0.5, refresh=1, rounds=None, seed=0)
    fit(classifier, images, labels, TrainConfig(epochs=2, batch_size=16, lr=3e-3, seed=0, augment=False),
        transform=loop)
    assert [entry.epoch for entry in loop.history] == [0.5, 1.5] and modes == [False, False]
    assert all(entry.attacked == 16 for entry in loop.history)
    assert classifier.net.training is False  # fit leaves the model in eval mode


def test_dependence_test_passes_a_shared_cue_and_fails_a_region_that_is_not_one(button_data, button_model):
    """The toy model reads the button alone: its cues pasted into class-0 images flip nearly all of them, a
    control region does not. The same donors with their masks moved to the top-left corner (no button
    there) lead their controls by nothing, so their class fails the gate."""
    _, test, boxes = button_data
    images, labels = test.images[:16], test.labels[:16]
    options = {"button": {"fills": ("median",)}}
    bank = collect_adversarial(button_model, images, labels, ("button",), 80, options, transplant=True,
                               cues_only=True).cues
    assert len(bank) >= 2 and (bank.labels == 1).all()
    lead = confirm_cue_classes(button_model, test.images, test.labels, bank, torch.Generator().manual_seed(0))
    assert lead[1] >= 0.5
    corner = torch.zeros_like(bank.masks)
    corner[:, :6, :6] = True
    assert int(boxes[boxes[:, 0] >= 0, :2].min()) >= 6  # no button reaches the corner (-1: no button)
    moved = adversarial.CueBank(bank.images, corner, bank.labels, bank.fills)
    lead = confirm_cue_classes(button_model, test.images, test.labels, moved, torch.Generator().manual_seed(0))
    assert abs(lead[1]) < adversarial.DEFAULT_GATE


def test_conflicts_are_the_images_whose_cue_disagrees_with_their_label(button_data, button_model):
    """On a 75/25 button set, the images that conflict with the class-1 button cue are the class-1 images
    without a button and the class-0 images with one: erasing the cue zone moves the model only on the
    holders. A loop round adds them to the pool as their own source, with their true labels."""
    _, test, _ = button_data
    images, labels = test.images[:16], test.labels[:16]
    bank = collect_adversarial(button_model, images, labels, ("button",), 80, {"button": {"fills": ("median",)}},
                               transplant=True, cues_only=True).cues
    assert len(bank) >= 2 and (bank.labels == 1).all()
    mixed, boxes = make_shortcut_dataset(96, 48, cue_rate=0.75, signal=0.0, seed=5)
    holds = boxes[:, 0] >= 0
    truth = (mixed.labels == 1) != holds
    found, drops = cue_conflicts(button_model, mixed.images, mixed.labels, bank)
    assert drops[1] >= adversarial.CONFLICT_MIN_DROP
    assert 10 <= int(truth.sum()) and float((found == truth).float().mean()) >= 0.9
    none, no_drops = cue_conflicts(button_model, mixed.images, mixed.labels, adversarial.CueBank.empty(images))
    assert not none.any() and no_drops == {}
    corner = torch.zeros_like(bank.masks)
    corner[:, :4, :4] = True  # a zone where no button is: erasing it moves no image, so it says nothing
    none, drops = cue_conflicts(button_model, mixed.images, mixed.labels,
                                adversarial.CueBank(bank.images, corner, bank.labels, bank.fills))
    assert drops[1] < adversarial.CONFLICT_MIN_DROP and not none.any()
    loop = AdversarialAugment(mixed.images, mixed.labels, attacks=("button",), fraction=0.5, budget=80,
                              warmup_epochs=0, attack_options={"button": {"fills": ("median",)}}, gate=None,
                              conflicts="zone")
    loop.start_step(0, button_model)
    counts = loop.history[0].fooled
    assert counts["conflicts"] == int((loop.pool_sources == list(counts).index("conflicts")).sum()) >= 10
    conflicting = loop.pool_sources == list(counts).index("conflicts")
    assert torch.equal(loop.pool_images[conflicting], mixed.images[cue_conflicts(button_model, mixed.images,
                                                                                  mixed.labels, loop.cues)[0]])
    without = AdversarialAugment(mixed.images, mixed.labels, attacks=("button",), fraction=0.5, budget=80,
                                 warmup_epochs=0, attack_options={"button": {"fills": ("median",)}}, gate=None,
                                 conflicts=None)
    without.start_step(0, button_model)
    assert "conflicts" not in without.history[0].fooled
    assert len(without.pool_labels) == len(loop.pool_labels) - counts["conflicts"]
    with pytest.raises(WeakspotError, match="conflicts must be"):
        AdversarialAugment(mixed.images, mixed.labels, conflicts="everything")


def test_error_conflicts_are_the_training_images_the_model_gets_wrong(button_data, button_model):
    """The default: after a round that confirmed a cue, the pool also holds the training images the current
    model misclassifies, with their true labels (on the 75/25 button set: the conflicting ones)."""
    mixed, boxes = make_shortcut_dataset(96, 48, cue_rate=0.75, signal=0.0, seed=5)
    wrong = button_model.predict(mixed.images)[0].cpu() != mixed.labels
    assert int(wrong.sum()) >= 10 and bool((wrong == ((mixed.labels == 1) != (boxes[:, 0] >= 0))).float().mean() >= 0.9)
    loop = AdversarialAugment(mixed.images, mixed.labels, attacks=("button",), fraction=0.5, budget=80,
                              warmup_epochs=0, attack_options={"button": {"fills": ("median",)}}, gate=None)
    assert loop.conflicts == adversarial.DEFAULT_CONFLICTS == "errors"
    loop.start_step(0, button_model)
    conflicting = loop.pool_sources == list(loop.history[0].fooled).index("conflicts")
    assert loop.history[0].fooled["conflicts"] == int(wrong.sum())
    assert torch.equal(loop.pool_images[conflicting], mixed.images[wrong])
    assert torch.equal(loop.pool_labels[conflicting], mixed.labels[wrong])


class ConstantPredictor:
    """Stands in for a later model that reads the cue the other way: it predicts one class for every image."""

    def __init__(self, label: int) -> None:
        self.label = label

    def predict(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.full((len(images),), self.label), torch.ones(len(images))


def test_refreshed_conflicts_are_the_current_models_errors(button_data, button_model, monkeypatch):
    """With ``conflict_refresh`` the pool's conflicts are found again every that many epochs after the round
    with the model of that moment; the round's removals and transplants stay; a round that keeps no cue stops it."""
    mixed, _ = make_shortcut_dataset(96, 48, cue_rate=0.75, signal=0.0, seed=5)
    loop = AdversarialAugment(mixed.images, mixed.labels, attacks=("button",), fraction=0.5, budget=80,
                              warmup_epochs=1.0, attack_options={"button": {"fills": ("median",)}}, gate=None,
                              conflict_refresh=0.5, pool_check=None)
    loop.start_step(1.0, button_model)
    source = list(loop.history[0].fooled).index("conflicts")
    harvested = loop.pool_images[loop.pool_sources != source].clone()
    loop.start_step(1.4, ConstantPredictor(0))
    assert loop.history[0].conflict_refreshes == []
    loop.start_step(1.5, ConstantPredictor(0))
    ones = mixed.labels == 1
    assert loop.history[0].conflict_refreshes == [(1.5, int(ones.sum()))]
    assert torch.equal(loop.pool_images[loop.pool_sources == source], mixed.images[ones])
    assert torch.equal(loop.pool_images[loop.pool_sources != source], harvested)
    loop.start_step(2.0, ConstantPredictor(1))
    assert torch.equal(loop.pool_labels[loop.pool_sources == source], mixed.labels[~ones])
    assert [epoch for epoch, _ in loop.history[0].conflict_refreshes] == [1.5, 2.0]
    loop.accumulate_conflicts = True  # the earlier conflicts (the label-0 images) stay beside the new ones
    loop.start_step(2.5, ConstantPredictor(0))
    assert torch.equal(loop.pool_images[loop.pool_sources == source], mixed.images)
    monkeypatch.setattr(adversarial, "confirm_cue_classes", lambda *args, **kwargs: {0: 0.0, 1: 0.0})
    loop.gate = 0.5
    loop.run_round(button_model, 1, 2.1)  # no class passes the dependence test
    loop.start_step(3.0, ConstantPredictor(0))
    assert loop.history[-1].conflict_refreshes == [] and not len(loop.pool_labels)
    with pytest.raises(WeakspotError, match="conflict refresh"):
        AdversarialAugment(mixed.images, mixed.labels, conflict_refresh=0.0)


class ScriptedPredictor:
    """Stands in for a model that gets exactly the images where ``wrong`` is set wrong (two classes)."""

    def __init__(self, labels: torch.Tensor, wrong: torch.Tensor) -> None:
        self.predictions = torch.where(wrong, 1 - labels, labels)

    def predict(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.predictions[:len(images)], torch.ones(len(images))


def test_agreements_join_each_classs_conflicts_in_equal_numbers():
    """With ``agreements`` each class's conflicts (here: the model's errors) come with as many of its images the
    model gets right, none of them a conflict, drawn the same way for the same seed; a refresh replaces both."""
    mixed, _ = make_shortcut_dataset(24, 8, cue_rate=0.75, signal=0.0, seed=5)
    labels = mixed.labels
    wrong = torch.zeros(len(labels), dtype=torch.bool)
    wrong[torch.nonzero(labels == 0).flatten()[:3]] = True
    wrong[torch.nonzero(labels == 1).flatten()[:5]] = True
    pools = []
    for _ in range(2):
        loop = AdversarialAugment(mixed.images, mixed.labels, agreements=True, conflict_refresh=0.5, seed=4)
        assert loop.add_conflicts(ScriptedPredictor(labels, wrong), 1.0)[0] == 8
        agreeing = loop.pool_sources == loop.conflict_source + 1
        assert torch.equal(torch.bincount(loop.pool_labels[agreeing]), torch.tensor([3, 5]))
        rows = [int(torch.nonzero((mixed.images == image).flatten(1).all(dim=1))[0]) for image in loop.pool_images[agreeing]]
        assert not wrong[rows].any() and len(set(rows)) == 8
        pools.append(loop.pool_images)
    assert torch.equal(pools[0], pools[1])
    loop.history.append(adversarial.RoundLog(1.0, 0, {}, 0.0))
    loop.refresh_conflicts(ConstantPredictor(0), 1.5)  # every label-1 image is an error: no label-1 image agrees
    assert torch.equal(torch.bincount(loop.pool_labels, minlength=2), torch.tensor([0, int((labels == 1).sum())]))


@pytest.mark.parametrize("lead, keeps", [(0.0, False), (0.9, True)])
def test_a_class_that_fails_the_gate_keeps_nothing_of_its_cues(button_data, button_model, monkeypatch, lead, keeps):
    _, test, _ = button_data
    images, labels = test.images[:16], test.labels[:16]
    options = {"button": {"fills": ("median",)}}
    ungated = collect_adversarial(button_model, images, labels, ("button",), 80, options, transplant=True,
                                  cues_only=True, seed=3)
    monkeypatch.setattr(adversarial, "confirm_cue_classes", lambda *args, **kwargs: {1: lead})
    gated = collect_adversarial(button_model, images, labels, ("button",), 80, options, transplant=True,
                                cues_only=True, gate=0.5, seed=3)
    assert gated.gate_lead == {"button:1": lead}
    if keeps:
        assert gated.counts == ungated.counts and torch.equal(gated.images, ungated.images)
        assert torch.equal(gated.cues.masks, ungated.cues.masks)
    else:
        assert ungated.counts["button"] >= 2
        assert gated.counts == {"button-transplant": 0, "button": 0} and len(gated.cues) == 0


def test_restart_runs_one_round_on_the_identification_model_then_retrains_from_the_initial_weights(
        retraining_case):
    data, config, model, initial = retraining_case
    method = create_method("adversarial", images=data.images, labels=data.labels, attacks=("crop",), budget=4,
                           fraction=0.5, transplant=False, attack_options={}, restart=1)
    assert isinstance(method, AdversarialRestart) and method.loop.rounds == 1
    result = method.fit(model, data.images, data.labels, config)
    assert [entry["stage"] for entry in result.history] == ["identification", "retrain", "retrain"]
    assert [entry.epoch for entry in method.loop.history] == [1.0]  # one round, between the stages
    assert len(method.loop.pool_labels) > 0

    reference = load_model("test_efficientnet", weights=None, class_names=data.class_names, device="cpu")
    reference.model.load_state_dict(initial)
    fit(reference, data.images, data.labels, config, transform=method.loop)  # the round's pool, no new round
    assert len(method.loop.history) == 1
    for key, value in reference.model.state_dict().items():
        assert torch.equal(value, model.model.state_dict()[key]), key
    with pytest.raises(WeakspotError, match="restart"):
        AdversarialRestart(AdversarialAugment(data.images, data.labels, rounds=None), identification_epochs=1)


def test_restart_counts_conflict_refreshes_from_the_retrainings_start(monkeypatch):
    """The round runs after the identification epochs, the retraining counts its epochs from zero: its first
    conflict refresh comes ``conflict_refresh`` epochs into the retraining, not after it."""
    data, _ = make_shortcut_dataset(16, 8, cue_rate=0.75, signal=0.0, seed=5)
    loop = AdversarialAugment(data.images, data.labels, conflict_refresh=0.5)

    def round_with_conflicts(classifier: object, index: int, progress: float) -> None:
        loop.pool_labels, loop.conflicts_found_at = data.labels.clone(), progress

    monkeypatch.setattr(loop, "run_round", round_with_conflicts)
    _, transform = AdversarialRestart(loop, identification_epochs=2).prepare_retraining(None, data.images, data.labels)
    assert transform is loop and loop.conflicts_found_at == 0.0


def test_pool_check_keeps_the_pool_only_while_a_cue_still_pushes_towards_its_class(button_model, monkeypatch):
    """With ``pool_check`` the model's reading of the bank's cues is measured every that many epochs after the
    round: a check where no class's cues push images towards it takes the pool out of the stream (the spread
    stays), one where some do puts it back."""
    mixed, _ = make_shortcut_dataset(96, 48, cue_rate=0.75, signal=0.0, seed=5)
    effects = {1: 0.3}
    monkeypatch.setattr(adversarial, "cue_effects", lambda *args, **kwargs: dict(effects))
    loop = AdversarialAugment(mixed.images, mixed.labels, attacks=("button",), fraction=0.5, budget=80,
                              warmup_epochs=1.0, attack_options={"button": {"fills": ("median",)}}, gate=None,
                              spread=1.0, pool_check=0.5)
    loop.start_step(1.0, button_model)
    assert len(loop.pool_labels) and len(loop.cues)
    images, labels = mixed.images[:8], mixed.labels[:8]
    assert len(loop(images, labels, button_model)[1]) == 12
    loop.start_step(1.4, button_model)
    assert loop.history[0].pool_checks == []
    effects = {1: -0.05}
    loop.start_step(1.5, button_model)
    assert loop.history[0].pool_checks == [(1.5, {1: -0.05}, False)]
    torch.manual_seed(0)
    spread_only, kept_labels = loop(images, labels, button_model)
    assert torch.equal(kept_labels, labels) and not torch.equal(spread_only, images)
    effects = {0: -0.1, 1: 0.02}
    loop.start_step(2.0, button_model)
    assert loop.history[0].pool_checks[-1] == (2.0, {0: -0.1, 1: 0.02}, True)
    assert len(loop(images, labels, button_model)[1]) == 12
    assert AdversarialAugment(mixed.images, mixed.labels, transplant=False, pool_check=0.5).pool_check is None


def test_cue_effects_are_signed_and_the_gate_reads_the_same_transplants(button_data, button_model):
    """``cue_effects`` is the mean rise of the cue class's probability over the transplants against their
    controls: a bank whose cue is the planted button raises p(class 1) in class-0 images; a model that reads the
    button as class 0 gives the same transplants a negative effect."""
    _, test, _ = button_data
    images, labels = test.images[:32], test.labels[:32]
    result = create_attack("button", button_model, budget=80, fills=("median",))(images, labels)
    _, _, donors, masks = transplant_cues(button_model, images, labels, result, 0.0, torch.Generator().manual_seed(0))
    bank = adversarial.CueBank(images[donors], masks, labels[donors], ("median",) * len(donors))
    assert len(bank) and set(bank.labels.tolist()) == {1}
    effects = adversarial.cue_effects(button_model, images, labels, bank, torch.Generator().manual_seed(1))
    assert effects[1] > 0.1
    assert adversarial.cue_effects(SwappedClasses(button_model), images, labels, bank,
                                   torch.Generator().manual_seed(1))[1] == pytest.approx(-effects[1], abs=1e-5)


def test_a_pool_check_pastes_at_most_its_share_of_cues_per_class(button_model, monkeypatch):
    """A check measures at most ``POOL_CHECK_CUES`` cues of each class, seeded: a class with fewer keeps all of
    them, and the cues it keeps are the bank's own (image, mask, label)."""
    bank = adversarial.CueBank(torch.rand(23, 3, 8, 8), torch.rand(23, 8, 8) > 0.5, torch.tensor([0] * 20 + [1] * 3),
                               ("median",) * 23)
    subset = bank.at_most(5, np.random.default_rng(0))
    assert torch.bincount(subset.labels).tolist() == [5, 3]
    rows = [next(row for row in range(len(bank)) if torch.equal(bank.images[row], image)) for image in subset.images]
    assert torch.equal(bank.masks[rows], subset.masks) and torch.equal(bank.labels[rows], subset.labels)
    assert torch.equal(bank.at_most(5, np.random.default_rng(0)).images, subset.images)
    measured: list[int] = []
    monkeypatch.setattr(adversarial, "cue_effects", lambda classifier, images, labels, cues, generator:
                        measured.append(len(cues)) or {0: 0.1})
    monkeypatch.setattr(adversarial, "POOL_CHECK_CUES", 2)
    data, _ = make_shortcut_dataset(16, 8, cue_rate=0.75, signal=0.0, seed=5)
    loop = AdversarialAugment(data.images, data.labels, pool_check=0.5)
    loop.cues, loop.history = bank, [adversarial.RoundLog(1.0, 8, {}, 0.0)]
    loop.check_pool(button_model, 1.5)
    assert measured == [4] and loop.pool_active


class SwappedClasses:
    """Stands in for a model that reads every cue as the other class's: ``model``'s two class probabilities swapped."""

    def __init__(self, model) -> None:
        self.model = model

    def predict_proba(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.predict_proba(images).flip(1)
