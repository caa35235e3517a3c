import numpy as np
import pytest
import torch

from weakspot.attacks import create_attack
from weakspot.augment.adversarial import AdversarialAugment, LoopConfig, RoundLog, locate, schedule
from weakspot.augment.adversarial.confirm import confirm_cue_classes, cue_effects
from weakspot.augment.adversarial.counterexamples import Pool, natural_conflicts, spread_cues
from weakspot.augment.adversarial.cues import (ZONE_GROWTH, ZONE_LEAST, ZONE_MOST, ZONE_SHARE, CueBank, cue_zone,
                                             grown)
from weakspot.augment.adversarial.locate import Harvest, transplant_cues
from weakspot.augment.baselines import create_method
from weakspot.errors import WeakspotError
from weakspot.models import load_model
from weakspot.shortcut import make_shortcut_dataset
from weakspot.training.loop import TrainConfig, fit

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def median_button(monkeypatch):
    """The button attack with its own defaults but the median fill: the loop's cheaper guidance and margin are
    tuned for 96 px photos, not the 48 px toy."""
    monkeypatch.setitem(locate.LOOP_ATTACK_OPTIONS, "button", {"fills": ("median",)})


def empty_harvest(images: torch.Tensor, labels: torch.Tensor) -> Harvest:
    return Harvest(images[:0], labels[:0], {}, CueBank.empty(images), torch.empty(0, dtype=torch.long), labels[:0])


def removal_harvest(images: torch.Tensor, labels: torch.Tensor) -> Harvest:
    """Two removals and no cue: a harvest that keeps something."""
    return Harvest(images[:2], labels[:2], {"button": 2}, CueBank.empty(images), torch.zeros(2, dtype=torch.long),
                   labels[:2])


def test_rounds_attack_after_warmup_and_keep_fooling_images_with_true_labels(button_data, button_model, monkeypatch):
    _, test, _ = button_data
    images, labels = test.images[:16], test.labels[:16]
    monkeypatch.setattr(locate, "LOOP_ATTACK_OPTIONS", {})  # the attack's own defaults on the 48 px toy
    config = LoopConfig(attacks=("superpixel",), fraction=1.0, budget=80, mix_ratio=0.5, warmup=1)
    loop = AdversarialAugment(images, labels, config, seed=0)
    loop.start_step(0, button_model)
    assert loop.history == [] and len(loop.pool) == 0
    batch, _ = loop(images[:8], labels[:8], button_model)
    assert batch.shape[0] == 8  # nothing to mix in before the first round
    loop.start_step(1, button_model)
    assert loop.history[0].kept["superpixel"] == len(loop.pool) >= 14
    predicted, _ = button_model.predict(loop.pool.images)
    assert bool((predicted != loop.pool.labels).all())  # every pool image fools the model
    assert set(loop.pool.labels.tolist()) <= set(labels.tolist())
    torch.manual_seed(0)
    mixed, _ = loop(images[:8], labels[:8], button_model)
    assert mixed.shape[0] == 12 and torch.equal(mixed[:8], images[:8])
    again = AdversarialAugment(images, labels, LoopConfig(attacks=("superpixel",), fraction=1.0, budget=80, warmup=1),
                               seed=0)
    again.start_step(1, button_model)
    assert torch.equal(again.pool.images, loop.pool.images)  # a resumed run rebuilds the same pool


def test_pool_draws_are_class_balanced_and_source_balanced_within_a_class(button_data):
    _, test, _ = button_data
    loop = AdversarialAugment(test.images[:4], test.labels[:4], LoopConfig(mix_ratio=1.0))
    loop.pool = Pool(torch.arange(10.0)[:, None, None, None].expand(10, 3, 4, 4), torch.tensor([0] * 9 + [1]),
                     torch.tensor([0] * 8 + [1, 1]))  # class 0: 8 removals, 1 transplant
    torch.manual_seed(0)
    mixed, labels = loop(torch.zeros(2000, 3, 4, 4), torch.zeros(2000, dtype=torch.long), None)
    share_of_rare_class = float((labels[2000:] == 1).float().mean())
    assert 0.45 < share_of_rare_class < 0.55
    # within class 0, half the draws are its one transplant (image 8)
    share_of_transplant = float((mixed[2000:, 0, 0, 0] == 8).float().mean())
    assert 0.2 < share_of_transplant < 0.3


def test_loop_config_validates_its_settings_and_names_every_problem(button_data):
    _, test, _ = button_data
    with pytest.raises(WeakspotError, match=r"^adversarial loop: needs a fraction in \(0, 1\]$"):
        LoopConfig(fraction=0.0)
    with pytest.raises(WeakspotError, match=r"^adversarial loop: needs a fraction in \(0, 1\], a refresh > 0$"):
        LoopConfig(fraction=1.5, refresh=0)
    for settings, need in (({"attacks": ()}, "at least one attack"), ({"budget": 0}, "a budget >= 1"),
                           ({"warmup": -1.0}, "a warm-up >= 0"), ({"refresh": float("inf")}, "a refresh > 0"),
                           ({"rounds": 0}, "rounds >= 1"), ({"gate": 1.5}, r"a gate in \[-1, 1\]"),
                           ({"spread": 1.5}, r"a spread in \[0, 1\]"), ({"mix_ratio": -0.5}, "a mix ratio >= 0"),
                           ({"pool_check": 0.0}, "a pool check > 0")):
        with pytest.raises(WeakspotError, match=f"^adversarial loop: needs {need}$"):
            LoopConfig(**settings)
    assert LoopConfig(rounds=None, gate=None, pool_check=None, spread=0.0, mix_ratio=0.0).rounds is None
    assert LoopConfig(attacks=["button", "block"]).attacks == ("button", "block")
    with pytest.raises(WeakspotError, match="method 'adversarial'.*fraction"):
        create_method("adversarial", images=test.images, labels=test.labels, fraction=0.5)  # settings: the config
    loop = create_method("adversarial", images=test.images, labels=test.labels, config=LoopConfig(fraction=0.5), seed=1)
    assert isinstance(loop, AdversarialAugment) and loop.config.fraction == 0.5 and loop.seed == 1


def test_rounds_caps_the_attack_rounds_and_keeps_the_last_pool(button_data):
    _, test, _ = button_data
    images, labels = test.images[:4], test.labels[:4]
    loop = AdversarialAugment(images, labels, LoopConfig(warmup=1, refresh=2, rounds=2))
    assert [loop.due_round(epoch) for epoch in (1, 3, 7)] == [0, 1, 1]  # the latest due round; none after 2

    def rounds_run(config: LoopConfig, steps_per_epoch: int, epochs: int) -> list[float]:
        """Where ``fit`` would run rounds: one ``start_step`` per step, the attack itself stubbed out."""
        loop = AdversarialAugment(images, labels, config)
        started = []
        for step in range(steps_per_epoch * epochs):
            progress = step / steps_per_epoch
            if (index := loop.due_round(progress)) is not None:
                loop.last_round = index
                started.append(progress)
        return started

    assert rounds_run(LoopConfig(warmup=1, refresh=2, rounds=2), 4, 8) == [1, 3]
    assert rounds_run(LoopConfig(), 4, 4) == [1.5]  # the defaults
    assert rounds_run(LoopConfig(warmup=1, refresh=1, rounds=None), 4, 4) == [1, 2, 3]
    assert rounds_run(LoopConfig(warmup=0.5, refresh=1, rounds=2), 4, 3) == [0.5, 1.5]
    assert rounds_run(LoopConfig(warmup=0.4, refresh=0.8, rounds=None), 3, 2) == [2 / 3, 4 / 3]
    retried = AdversarialAugment(images, labels, LoopConfig(warmup=1, refresh=1, rounds=1))
    assert retried.due_round(1) == 0
    retried.last_round = 0
    assert retried.due_round(2) is None
    retried.empty_rounds = 1  # round 0 kept nothing: it does not count
    assert retried.due_round(1.5) is None and retried.due_round(2) == 1
    resumed = AdversarialAugment(images, labels, LoopConfig(warmup=0.5, refresh=1, rounds=None))
    assert resumed.due_round(2.0) == 1 and resumed.due_round(2.0) == 1  # resumed at epoch 2: round 1 again


def test_a_retry_that_confirms_nothing_on_the_regular_grid_falls_back_to_the_shifted_one(
        button_data, button_model, monkeypatch):
    """A round after the first whose regular grid keeps nothing explains the same images on the shifted grid and
    keeps that harvest; round 0 and a round whose regular grid kept something explain once."""
    _, test, _ = button_data
    images, labels = test.images[:6], test.labels[:6]
    given = []
    nothing, found = empty_harvest(images, labels), removal_harvest(images, labels)

    def regular_grid_finds_nothing(*args, **kwargs):
        given.append((kwargs["seed"], kwargs["shifted"], kwargs["attacked"]))
        return found if kwargs["shifted"] else nothing

    monkeypatch.setattr(schedule, "locate", regular_grid_finds_nothing)
    config = LoopConfig(fraction=1.0, warmup=0, refresh=1, rounds=None)
    loop = AdversarialAugment(images, labels, config, seed=3)
    for round_index in range(2):
        loop.run_round(button_model, round_index, float(round_index))
    first, retry = 3 * 1_000_003, 3 * 1_000_003 + 1
    assert given == [(first, False, None), (retry, False, None), (retry, True, None)]
    assert [entry.grids_tried for entry in loop.history] == [1, 2] and loop.empty_rounds == 1
    assert torch.equal(loop.pool.images, found.images) and loop.history[1].kept == {"button": 2}
    given.clear()

    def regular_grid_finds(*args, **kwargs):
        given.append((kwargs["seed"], kwargs["shifted"], kwargs["attacked"]))
        return found

    monkeypatch.setattr(schedule, "locate", regular_grid_finds)
    kept_at_once = AdversarialAugment(images, labels, config, seed=3)
    kept_at_once.run_round(button_model, 1, 1.0)  # round 1 on the regular grid keeps something: no fallback
    assert given == [(retry, False, None)] and kept_at_once.history[0].grids_tried == 1


def test_a_round_that_keeps_something_asks_for_the_learning_rate_restart(button_data, button_model, monkeypatch):
    """``start_step`` returns True (``fit`` restarts the decay) after a round that kept something; a round that
    kept nothing and a step without a round return False."""
    _, test, _ = button_data
    images, labels = test.images[:6], test.labels[:6]
    near_the_gate = empty_harvest(images, labels)
    near_the_gate.gate_lead = {"button:0": 0.1}  # under the gate, near enough for a retry
    harvests = iter([near_the_gate, removal_harvest(images, labels)])
    monkeypatch.setattr(schedule, "locate", lambda *args, **kwargs: next(harvests))
    loop = AdversarialAugment(images, labels, LoopConfig(fraction=1.0, warmup=0, refresh=1, rounds=1))
    assert [loop.start_step(progress, button_model) for progress in (0.0, 0.5, 1.0, 1.5)] == [False, False, True,
                                                                                               False]
    assert next(harvests, None) is None  # round 0 and round 1 ran, once each


def gated_harvest(images: torch.Tensor, labels: torch.Tensor, leads: dict[int, float], gate: float = 0.15
                  ) -> Harvest:
    """A round's harvest with one cue and one transplant per class of ``leads`` that passed ``gate`` (as
    ``locate`` keeps them), each class's lead as given."""
    classes = torch.tensor(sorted(label for label, lead in leads.items() if lead >= gate), dtype=torch.long)
    masks = torch.zeros(len(classes), *images.shape[-2:], dtype=torch.bool)
    masks[:, :4, :4] = True
    bank = CueBank(images[:len(classes)], masks, classes, ("median",) * len(classes))
    return Harvest(images[:len(classes)], 1 - classes, {"button-transplant": len(classes)}, bank,
                   torch.zeros(len(classes), dtype=torch.long), classes,
                   {f"button:{label}": lead for label, lead in leads.items()})


@pytest.mark.parametrize("first, second, kept", [({0: 0.9, 1: 0.2}, {1: 0.05}, [0]),
                                                 ({0: 0.9, 1: 0.2}, {1: 0.12}, [0, 1]),
                                                 ({1: 0.2}, {}, []),
                                                 ({0: 0.4, 1: 0.35}, None, [0, 1])])
def test_gate_retest_keeps_a_marginal_class_only_when_two_samples_average_the_gate(
        button_data, button_model, monkeypatch, first, second, kept):
    """A class that led by under twice the gate (0.15) is tested on a second sample of other training images, and
    kept when the two leads average the gate (a class the second sample confirms nothing of leads by 0 there); a
    round with no marginal class draws no second sample."""
    _, test, _ = button_data
    images, labels = test.images[:12], test.labels[:12]
    harvests = [gated_harvest(images, labels, first), *([] if second is None else [gated_harvest(images, labels,
                                                                                                  second)])]
    calls = []

    def fake_locate(classifier, round_images, *args, **kwargs):
        calls.append((round_images, kwargs["seed"]))
        return harvests[len(calls) - 1]

    monkeypatch.setattr(schedule, "locate", fake_locate)
    loop = AdversarialAugment(images, labels, LoopConfig(fraction=0.5, warmup=0, gate=0.15), seed=2)
    loop.run_round(button_model, 0, 0.0)
    assert len(calls) == len(harvests)
    if second is not None:
        first_rows = {tuple(image.flatten()[:8].tolist()) for image in calls[0][0]}
        assert not first_rows & {tuple(image.flatten()[:8].tolist()) for image in calls[1][0]}  # other images
        assert calls[1][1] != calls[0][1]
    assert sorted(loop.cues.labels.tolist()) == kept
    transplants = loop.pool.sources == list(loop.history[0].kept).index("button-transplant")
    assert sorted(loop.pool.labels[transplants].tolist()) == sorted(1 - label for label in kept)
    assert loop.history[0].retest_lead == (harvests[-1].gate_lead if second is not None else {})
    assert loop.history[0].kept["button-transplant"] == len(kept)


def test_the_retest_attacks_only_the_marginal_class_images_of_the_second_sample(
        button_data, button_model, monkeypatch):
    """The second sample's images of the marginal class come first and only they are attacked; the rest of the
    sample is there as recipients. A sample with none of them confirms nothing."""
    _, test, _ = button_data
    images, labels = test.images[:24], test.labels[:24]
    calls = []

    def fake_locate(classifier, round_images, round_labels, *args, **kwargs):
        calls.append((round_labels, kwargs["attacked"]))
        return gated_harvest(images, labels, {0: 0.9, 1: 0.2} if len(calls) == 1 else {1: 0.12})

    monkeypatch.setattr(schedule, "locate", fake_locate)
    config = LoopConfig(fraction=0.5, warmup=0, gate=0.15)
    loop = AdversarialAugment(images, labels, config, seed=2)
    loop.run_round(button_model, 0, 0.0)
    (first_labels, first_attacked), (second_labels, attacked) = calls
    assert first_attacked is None and len(second_labels) == len(first_labels)
    assert 0 < attacked < len(second_labels) and attacked == int((second_labels == 1).sum())
    assert (second_labels[:attacked] == 1).all() and (second_labels[attacked:] == 0).all()
    assert sorted(loop.cues.labels.tolist()) == [0, 1]  # (0.2 + 0.12) / 2 >= 0.15
    calls.clear()
    only_zeros = AdversarialAugment(images[labels == 0], labels[labels == 0], config, seed=2)
    only_zeros.run_round(button_model, 0, 0.0)
    assert len(calls) == 1 and sorted(only_zeros.cues.labels.tolist()) == [0]


def test_locate_attacks_the_first_images_and_pastes_into_all(button_data, button_model, median_button):
    """``attacked``: only the leading images are attacked (their removals and cues are harvested); the others
    receive transplants and the dependence test's pastes."""
    _, test, _ = button_data
    images, labels = test.images[:32], test.labels[:32]
    order = torch.argsort(labels, descending=True, stable=True)  # the button's class (1) first
    images, labels = images[order], labels[order]
    buttoned = int((labels == 1).sum())
    harvest = locate.locate(button_model, images, labels, ("button",), 80, -1.0, seed=3, attacked=buttoned)
    alone = locate.locate(button_model, images[:buttoned], labels[:buttoned], ("button",), 80, -1.0, seed=3)
    transplants = harvest.counts["button-transplant"]
    assert transplants >= 2 and (harvest.cues.labels == 1).all() and (harvest.labels[:transplants] == 0).all()
    assert (harvest.labels[transplants:] == 1).all() and (harvest.cue_classes == 1).all()
    result = create_attack("button", button_model, budget=80, fills=("median",))(images[:buttoned], labels[:buttoned])
    donors = [int(torch.nonzero((images[:buttoned] == cue).flatten(1).all(dim=1))[0]) for cue in harvest.cues.images]
    assert torch.equal(harvest.images[transplants:], result.adversarial[donors])  # removals of the attacked images
    assert alone.counts == {"button-transplant": 0, "button": 0}  # alone, a cue has no image of the other class


def test_the_loop_attack_options_reach_the_attacks(button_data, button_model, monkeypatch):
    _, test, _ = button_data
    monkeypatch.setitem(locate.LOOP_ATTACK_OPTIONS, "superpixel", {"n_segmentz": 12})
    loop = AdversarialAugment(test.images[:2], test.labels[:2], LoopConfig(attacks=("superpixel",), warmup=0))
    with pytest.raises(WeakspotError, match="attack 'superpixel'.*n_segmentz"):
        loop.check(button_model)
    with pytest.raises(WeakspotError, match="attack 'superpixel'.*n_segmentz"):
        loop.start_step(0, button_model)


def test_transplants_paste_an_erased_cue_into_the_other_class(button_data, button_model, median_button):
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
    loop = AdversarialAugment(images, labels, LoopConfig(fraction=1.0, budget=80, warmup=0))
    loop.start_step(0, button_model)
    assert loop.history[0].kept["button-transplant"] > 0
    assert len(loop.pool) == sum(loop.history[0].kept.values())


def test_a_removal_is_kept_only_with_its_transplant(button_data, button_model, monkeypatch, median_button):
    """A removal stays in the pool only when its erased region, pasted into an image of another class, fooled
    the model as well. On the toy every button transplant fools, so half of them are dropped here (a recipient
    the model would not be fooled on) to see the removals follow their donors."""
    _, test, _ = button_data
    images, labels = test.images[:16], test.labels[:16]
    real_transplant_cues = locate.transplant_cues

    def every_second_donor(*args, **kwargs):
        grafted, grafted_labels, donors, masks = real_transplant_cues(*args, **kwargs)
        return grafted[::2], grafted_labels[::2], donors[::2], masks[::2]

    monkeypatch.setattr(locate, "transplant_cues", every_second_donor)
    cues = locate.locate(button_model, images, labels, ("button",), 80, None, seed=3)
    result = create_attack("button", button_model, budget=80, fills=("median",))(images, labels)
    grafted, _, donors, _ = real_transplant_cues(button_model, images, labels, result, 0.0,
                                                 torch.Generator().manual_seed(3))
    kept_donors = donors[::2]
    assert int(result.fooled.sum()) > len(kept_donors) >= 2  # removals whose transplant was dropped: not kept
    assert cues.counts == {"button-transplant": len(kept_donors), "button": len(kept_donors)}
    transplants = len(kept_donors)
    assert torch.equal(cues.images[:transplants], grafted[::2])
    assert torch.equal(cues.images[transplants:], result.adversarial[kept_donors])
    assert torch.equal(cues.labels[transplants:], labels[kept_donors])
    assert torch.equal(cues.cues.images, images[kept_donors]) and torch.equal(cues.cues.labels, labels[kept_donors])


def test_spread_pastes_or_swaps_out_confirmed_cues_blind_to_the_label(button_data, button_model, median_button):
    """Every image gets one confirmed cue (probability 1), whatever its class: its class's cue zone pasted
    from the donor (the toy model then reads the button and says 1) or erased with the zone of a batch image of
    the other class (the model then says 0); nothing else changes."""
    _, test, _ = button_data
    images, labels = test.images[:16], test.labels[:16]
    bank = locate.locate(button_model, images, labels, ("button",), 80, None, seed=0).cues
    assert len(bank) >= 2 and (bank.labels == 1).all() and set(bank.fills) == {"median"}
    batch, batch_labels = test.images[16:48], test.labels[16:48]
    assert torch.equal(spread_cues(bank, batch, batch_labels, 0.0), batch)
    torch.manual_seed(0)
    spread = spread_cues(bank, batch, batch_labels, 1.0)
    torch.manual_seed(0)
    torch.rand(len(batch))  # the same draws: who gets a cue (everyone at 1.0), which cue, paste or erase
    picked = torch.multinomial(torch.ones(len(bank)), len(batch), replacement=True)  # one class: uniform
    erase = torch.rand(len(batch)) < 0.5
    others = torch.nonzero(batch_labels != 1).flatten()  # the batch's images of another class than the cue's
    absent = others[torch.randint(len(others), (int(erase.sum()),))]
    zone = cue_zone(bank.masks)  # every cue is a class-1 button here
    cover = bank.masks.float().mean(dim=0)
    shared = cover >= ZONE_SHARE * cover.max()  # as covered as a quarter of the peak
    assert zone[shared].all() and int(shared.sum()) < int(zone.sum()) < zone.numel() // 2  # grown, not the image
    sources = bank.images[picked].clone()
    sources[erase] = batch[absent]
    assert torch.equal(spread, torch.where(zone, sources, batch))
    for edit, said in ((~erase, 1), (erase, 0)):
        assert len(set(batch_labels[edit].tolist())) == 2  # both classes get both edits
        # erased: the zone removes most buttons, although buttons move by up to 6% between images
        assert float((button_model.predict(spread[edit])[0].cpu() == said).float().mean()) >= 0.7
    loop = AdversarialAugment(images, labels, LoopConfig(fraction=1.0, budget=80, warmup=0, spread=1.0))
    loop.start_step(0, button_model)
    assert sum(loop.history[0].cues_per_class.values()) == len(loop.cues) > 0
    assert loop.history[0].zone_share == {1: pytest.approx(float(loop.cues.zone_of[1].float().mean()))}
    assert 0 < loop.history[0].zone_share[1] < 0.5  # what the spread edits: recorded, as it costs clean accuracy
    mixed, mixed_labels = loop(batch, batch_labels, button_model)
    assert torch.equal(mixed_labels[:len(batch)], batch_labels) and not torch.equal(mixed[:len(batch)], batch)
    unspread = AdversarialAugment(images, labels, LoopConfig(spread=0.0, mix_ratio=0.0))
    unspread.cues = loop.cues
    assert torch.equal(unspread(batch, batch_labels, button_model)[0], batch)


def test_swap_erase_puts_in_the_zone_of_a_batch_image_of_another_class():
    """An erased cue's zone comes from a batch image of another class than the cue's (its natural absence), a
    pasted one from the donor; a batch with no such image falls back to the fill."""
    masks = torch.zeros(2, 8, 8, dtype=torch.bool)
    masks[:, 2:4, 2:4] = True
    bank = CueBank(torch.full((2, 3, 8, 8), 0.9), masks, torch.tensor([1, 1]), ("median", "median"))
    zone = bank.zone_of[1]
    batch = torch.arange(40, dtype=torch.float32).div(100).view(40, 1, 1, 1).expand(40, 3, 8, 8).clone()
    labels = torch.tensor([0, 1] * 20)
    torch.manual_seed(0)
    spread = spread_cues(bank, batch, labels, 1.0)
    values = spread[:, 0][:, zone].unique(dim=1)
    assert values.shape[1] == 1  # one source per image's zone
    sources = values[:, 0]
    class_zero_values = batch[labels == 0, 0, 0, 0]
    pasted = torch.isclose(sources, torch.tensor(0.9))
    swapped = torch.isin(sources, class_zero_values)
    assert (pasted | swapped).all() and 10 < int(swapped.sum()) < 30  # a fair coin over 40 images
    assert torch.equal(spread[:, :, ~zone], batch[:, :, ~zone])
    only_cue_class = spread_cues(bank, batch[labels == 1], labels[labels == 1], 1.0)  # nothing to swap in: the fill
    inside = only_cue_class[:, 0][:, zone]
    assert not torch.isin(inside, class_zero_values).any()


def test_a_cue_zone_keeps_the_pixels_enough_cues_share_grown_by_a_share_of_the_side():
    """The zone: the pixels at least ``ZONE_SHARE`` as covered as the most covered one and covered by at least
    ``ZONE_LEAST`` cues, grown by ``ZONE_GROWTH`` of the side. A stray patch of one cue stays out, with many cues
    (under a quarter of the peak) or few (a quarter of the peak, but one cue); the bank draws its zones so."""
    side = 20
    reach = round(ZONE_GROWTH * side)
    assert reach >= 1 and ZONE_LEAST >= 2

    def grown(rows: slice, columns: slice) -> torch.Tensor:
        expected = torch.zeros(side, side, dtype=torch.bool)
        expected[max(rows.start - reach, 0):rows.stop + reach, max(columns.start - reach, 0):columns.stop + reach] = True
        return expected

    masks = torch.zeros(10, side, side, dtype=torch.bool)
    masks[:, 15:18, 8:11] = True  # where every cue sits
    masks[0, 0:4, 0:4] = True  # one cue's stray patch: a tenth of the peak's cover
    assert 1 / 10 < ZONE_SHARE
    assert torch.equal(cue_zone(masks), grown(slice(15, 18), slice(8, 11)))
    bank = CueBank(torch.rand(10, 3, side, side), masks, torch.ones(10, dtype=torch.long), ("median",) * 10)
    assert torch.equal(bank.zone_of[1], cue_zone(masks))
    assert torch.equal(bank.select(torch.ones(10, dtype=torch.bool)).zone_of[1], cue_zone(masks))
    assert torch.equal(bank.spread_masks(torch.tensor([0, 3])), cue_zone(masks).expand(2, -1, -1))
    few = torch.zeros(4, side, side, dtype=torch.bool)
    few[:3, 15:18, 8:11] = True  # three cues agree
    for index, corner in enumerate((0, 8, 16)):
        few[index, corner:corner + 3, 0:3] = True  # each has a stray box of its own: a third of the peak's cover
    few[3, 0:3, 15:18] = True  # the fourth is elsewhere
    assert 1 / 3 >= ZONE_SHARE
    assert torch.equal(cue_zone(few), grown(slice(15, 18), slice(8, 11)))
    apart = torch.zeros(2, side, side, dtype=torch.bool)  # no pixel is shared: the peak's one cue is enough
    apart[0, 0:3, 0:3] = True
    apart[1, 15:18, 15:18] = True
    assert torch.equal(cue_zone(apart), grown(slice(0, 3), slice(0, 3)) | grown(slice(15, 18), slice(15, 18)))


def test_a_zone_wider_than_one_place_spreads_each_cue_on_its_own_region():
    """Cues in the four corners make a zone over most of the image; the spread then pastes or erases only the
    picked cue's own region, grown as a zone is, and keeps the zone of a class whose cues sit in one place."""
    side = 20
    masks = torch.zeros(13, side, side, dtype=torch.bool)
    for index, (row, column) in enumerate([(0, 0), (0, 14), (14, 0), (14, 14)] * 3):
        masks[index, row:row + 6, column:column + 6] = True
    masks[12, 8:11, 8:11] = True  # the other class's one cue, in one place
    labels = torch.tensor([1] * 12 + [0])
    bank = CueBank(torch.rand(13, 3, side, side), masks, labels, ("median",) * 13)
    assert float(bank.zone_of[1].float().mean()) > ZONE_MOST >= float(bank.zone_of[0].float().mean())
    spread = bank.spread_masks(torch.tensor([0, 5, 12]))
    assert torch.equal(spread[0], grown(masks[0])) and torch.equal(spread[1], grown(masks[5]))
    assert torch.equal(spread[2], bank.zone_of[0]) and not spread[0, 10:, :].any()


def test_spread_draws_donors_class_balanced_and_an_empty_bank_draws_nothing(button_data, button_model, median_button):
    _, test, _ = button_data
    harvest = locate.locate(button_model, test.images[:16], test.labels[:16], ("button",), 80, None, seed=0)
    assert torch.bincount(harvest.sources, minlength=len(harvest.counts)).tolist() == list(harvest.counts.values())
    bank = harvest.cues
    # nine tenths of the bank relabelled class 0: draws must still come half from each class
    masks = bank.masks[:1].repeat(10, 1, 1)
    masks[9] = False
    masks[9, :4, :4] = True  # the class-1 cue alone covers the top-left corner
    bank = CueBank(bank.images[:1].repeat(10, 1, 1, 1), masks, torch.tensor([0] * 9 + [1]), ("median",) * 10)
    assert bool(bank.images[0, :, 0, 0].abs().sum() > 0)  # the donor's corner is not the batch's
    batch, labels = torch.zeros(4000, 3, 48, 48), torch.arange(4000) % 2
    torch.manual_seed(0)
    spread = spread_cues(bank, batch, labels, 1.0)
    corner_pasted = spread[:, :, 0, 0].abs().sum(dim=1) > 0
    share = float(corner_pasted.float().mean())  # pasted (half) x drawn from class 1 (half): about a quarter
    assert 0.2 < share < 0.3
    state = torch.get_rng_state()
    empty = CueBank.empty(batch)
    assert torch.equal(spread_cues(empty, batch[:8], labels[:8], 1.0), batch[:8])
    assert torch.equal(torch.get_rng_state(), state)


def test_an_attack_round_leaves_the_training_rng_untouched(button_data, button_model, monkeypatch, median_button):
    """A round draws from seeded generators only: training after a round that keeps nothing is ERM's."""
    _, test, _ = button_data
    config = LoopConfig(fraction=1.0, budget=80, warmup=0, rounds=1, gate=0.15)
    loop = AdversarialAugment(test.images[:16], test.labels[:16], config, seed=0)
    torch.manual_seed(5)
    state = torch.get_rng_state()
    loop.start_step(0, button_model)
    assert len(loop.history) == 1 and torch.equal(torch.get_rng_state(), state)
    assert loop.empty_rounds == 0 and len(loop.pool)
    # every class's lead under the gate but one at half of it: retried
    monkeypatch.setattr(locate, "confirm_cue_classes", lambda *args, **kwargs: {0: -1.0, 1: 0.075})
    strict = AdversarialAugment(test.images[:16], test.labels[:16], config, seed=0)
    strict.start_step(0, button_model)
    assert len(strict.pool) == 0 and strict.empty_rounds == 1 and strict.due_round(1) == 1
    assert strict.history[0].best_lead == 0.075


def test_a_round_far_under_the_gate_is_not_retried(button_data, button_model, monkeypatch):
    """A round that kept nothing and whose best lead, over both grids, stays under half the gate ends the search
    (a resumed run too); with the gate off, or a lead at half the gate on either grid, the retry follows."""
    _, test, _ = button_data
    images, labels = test.images[:6], test.labels[:6]
    leads_per_call: list[dict[str, float]] = []

    def harvest_with_leads(*args, **kwargs):
        harvest = empty_harvest(images, labels)
        harvest.gate_lead = leads_per_call.pop(0)
        return harvest

    monkeypatch.setattr(schedule, "locate", harvest_with_leads)

    def searching_after(leads: list[dict[str, float]], index: int, gate: float | None = 0.2) -> bool:
        leads_per_call[:] = leads
        loop = AdversarialAugment(images, labels, LoopConfig(fraction=1.0, warmup=0, refresh=1, rounds=None, gate=gate))
        loop.run_round(button_model, index, float(index))
        assert not leads_per_call  # every grid the round explains on was used
        resumed = AdversarialAugment(images, labels, loop.config)
        resumed.load_state(loop.state())
        assert resumed.searching == loop.searching
        return loop.due_round(index + 1.0) is not None

    assert not searching_after([{"button:0": 0.09, "button:1": -0.2}], 0)
    assert not searching_after([{}], 0)  # no cue to test at all
    assert searching_after([{"button:0": 0.1}], 0)
    assert searching_after([{"button:0": 0.02}, {"button:1": 0.12}], 1)  # the shifted grid's lead counts
    assert not searching_after([{"button:0": 0.02}, {"button:1": 0.05}], 1)
    assert searching_after([{}], 0, gate=None)


def test_a_loop_that_keeps_nothing_trains_exactly_as_erm(button_data):
    """No round before the end (warm-up past the last epoch): the weights are ERM's, bit for bit."""
    train, _, _ = button_data
    images, labels = train.images[:48], train.labels[:48]
    config = TrainConfig(epochs=2, batch_size=16, lr=3e-3, seed=0, augment=True)  # augmentation draws from torch's RNG
    weights = []
    for transform in (None, AdversarialAugment(images, labels, LoopConfig(warmup=5), seed=0)):
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
            return super().start_step(progress, classifier)

    loop = Recorded(images, labels, LoopConfig(fraction=0.25, budget=40, warmup=0.5, refresh=1, rounds=None, gate=None),
                    seed=0)
    fit(classifier, images, labels, TrainConfig(epochs=2, batch_size=16, lr=3e-3, seed=0, augment=False),
        transform=loop)
    assert [entry.epoch for entry in loop.history] == [0.5, 1.5] and modes == [False, False]
    assert all(entry.attacked == 16 for entry in loop.history)
    assert classifier.net.training is False  # fit leaves the model in eval mode


def test_dependence_test_passes_a_shared_cue_and_fails_a_region_that_is_not_one(
        button_data, button_model, median_button):
    """The toy model reads the button alone: its cues pasted into class-0 images flip nearly all of them, a
    control region does not. The same donors with their masks moved to the top-left corner (no button
    there) lead their controls by nothing, so their class fails the gate."""
    _, test, boxes = button_data
    images, labels = test.images[:16], test.labels[:16]
    bank = locate.locate(button_model, images, labels, ("button",), 80, None, seed=0).cues
    assert len(bank) >= 2 and (bank.labels == 1).all()
    lead = confirm_cue_classes(button_model, test.images, test.labels, bank, torch.Generator().manual_seed(0))
    assert lead[1] >= 0.5
    corner = torch.zeros_like(bank.masks)
    corner[:, :6, :6] = True
    assert int(boxes[boxes[:, 0] >= 0, :2].min()) >= 6  # no button reaches the corner (-1: no button)
    moved = CueBank(bank.images, corner, bank.labels, bank.fills)
    lead = confirm_cue_classes(button_model, test.images, test.labels, moved, torch.Generator().manual_seed(0))
    assert abs(lead[1]) < LoopConfig().gate


def test_natural_conflicts_are_the_training_images_the_model_gets_wrong(button_model, monkeypatch, median_button):
    """After a round that confirmed a cue, the pool also holds the training images the current model
    misclassifies, with their true labels (on the 75/25 button set: the conflicting ones); a round that confirmed
    no cue adds none."""
    mixed, boxes = make_shortcut_dataset(96, 48, cue_rate=0.75, signal=0.0, seed=5)
    wrong = button_model.predict(mixed.images)[0].cpu() != mixed.labels
    assert int(wrong.sum()) >= 10 and bool((wrong == ((mixed.labels == 1) != (boxes[:, 0] >= 0))).float().mean() >= 0.9)
    assert torch.equal(natural_conflicts(button_model, mixed.images, mixed.labels), wrong)
    loop = AdversarialAugment(mixed.images, mixed.labels, LoopConfig(fraction=0.5, budget=80, warmup=0, gate=None))
    loop.start_step(0, button_model)
    conflicting = loop.pool.sources == list(loop.history[0].kept).index("conflicts")
    assert loop.history[0].kept["conflicts"] == int(wrong.sum())
    assert torch.equal(loop.pool.images[conflicting], mixed.images[wrong])
    assert torch.equal(loop.pool.labels[conflicting], mixed.labels[wrong])
    monkeypatch.setattr(schedule, "locate", lambda *args, **kwargs: removal_harvest(mixed.images, mixed.labels))
    no_cue = AdversarialAugment(mixed.images, mixed.labels, LoopConfig(fraction=0.5, warmup=0))
    no_cue.start_step(0, button_model)  # a round that kept removals but confirmed no cue
    assert no_cue.history[0].kept == {"button": 2} and len(no_cue.pool) == 2


@pytest.mark.parametrize("lead, keeps", [(0.0, False), (0.9, True)])
def test_a_class_that_fails_the_gate_keeps_nothing_of_its_cues(button_data, button_model, monkeypatch, median_button,
                                                              lead, keeps):
    _, test, _ = button_data
    images, labels = test.images[:16], test.labels[:16]
    ungated = locate.locate(button_model, images, labels, ("button",), 80, None, seed=3)
    monkeypatch.setattr(locate, "confirm_cue_classes", lambda *args, **kwargs: {1: lead})
    gated = locate.locate(button_model, images, labels, ("button",), 80, 0.5, seed=3)
    assert gated.gate_lead == {"button:1": lead}
    if keeps:
        assert gated.counts == ungated.counts and torch.equal(gated.images, ungated.images)
        assert torch.equal(gated.cues.masks, ungated.cues.masks)
    else:
        assert ungated.counts["button"] >= 2
        assert gated.counts == {"button-transplant": 0, "button": 0} and len(gated.cues) == 0


def test_pool_check_keeps_the_pool_only_while_a_cue_still_pushes_towards_its_class(
        button_model, monkeypatch, median_button):
    """The model's reading of the bank's cues is measured every ``pool_check`` epochs after the round: a check
    where no class's cues push images towards it takes the pool out of the stream (the spread stays), one where
    some do puts it back."""
    mixed, _ = make_shortcut_dataset(96, 48, cue_rate=0.75, signal=0.0, seed=5)
    effects = {1: 0.3}
    monkeypatch.setattr(schedule, "cue_effects", lambda *args, **kwargs: dict(effects))
    loop = AdversarialAugment(mixed.images, mixed.labels, LoopConfig(fraction=0.5, budget=80, warmup=1.0, gate=None,
                                                                     spread=1.0, pool_check=0.5))
    loop.start_step(1.0, button_model)
    assert len(loop.pool) and len(loop.cues)
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
    unchecked = AdversarialAugment(mixed.images, mixed.labels, LoopConfig(pool_check=None))
    unchecked.cues, unchecked.history = loop.cues, [RoundLog(1.0, 48, {}, 0.0)]
    unchecked.last_round, unchecked.pool_checked_at = 0, 1.0
    assert unchecked.start_step(5.0, button_model) is False and unchecked.history[0].pool_checks == []


def test_cue_effects_are_signed_and_the_gate_reads_the_same_transplants(button_data, button_model):
    """``cue_effects`` is the mean rise of the cue class's probability over the transplants against their
    controls: a bank whose cue is the planted button raises p(class 1) in class-0 images; a model that reads the
    button as class 0 gives the same transplants a negative effect."""
    _, test, _ = button_data
    images, labels = test.images[:32], test.labels[:32]
    result = create_attack("button", button_model, budget=80, fills=("median",))(images, labels)
    _, _, donors, masks = transplant_cues(button_model, images, labels, result, 0.0, torch.Generator().manual_seed(0))
    bank = CueBank(images[donors], masks, labels[donors], ("median",) * len(donors))
    assert len(bank) and set(bank.labels.tolist()) == {1}
    effects = cue_effects(button_model, images, labels, bank, torch.Generator().manual_seed(1))
    assert effects[1] > 0.1
    assert cue_effects(SwappedClasses(button_model), images, labels, bank,
                       torch.Generator().manual_seed(1))[1] == pytest.approx(-effects[1], abs=1e-5)


def test_a_pool_check_pastes_at_most_its_share_of_cues_per_class(button_model, monkeypatch):
    """A check measures at most ``POOL_CHECK_CUES`` cues of each class, seeded: a class with fewer keeps all of
    them, and the cues it keeps are the bank's own (image, mask, label)."""
    bank = CueBank(torch.rand(23, 3, 8, 8), torch.rand(23, 8, 8) > 0.5, torch.tensor([0] * 20 + [1] * 3),
                   ("median",) * 23)
    subset = bank.at_most(5, np.random.default_rng(0))
    assert torch.bincount(subset.labels).tolist() == [5, 3]
    rows = [next(row for row in range(len(bank)) if torch.equal(bank.images[row], image)) for image in subset.images]
    assert torch.equal(bank.masks[rows], subset.masks) and torch.equal(bank.labels[rows], subset.labels)
    assert torch.equal(bank.at_most(5, np.random.default_rng(0)).images, subset.images)
    measured: list[int] = []
    monkeypatch.setattr(schedule, "cue_effects", lambda classifier, images, labels, cues, generator:
                        measured.append(len(cues)) or {0: 0.1})
    monkeypatch.setattr(schedule, "POOL_CHECK_CUES", 2)
    data, _ = make_shortcut_dataset(16, 8, cue_rate=0.75, signal=0.0, seed=5)
    loop = AdversarialAugment(data.images, data.labels, LoopConfig(pool_check=0.5))
    loop.cues, loop.history = bank, [RoundLog(1.0, 8, {}, 0.0)]
    loop.check_pool(button_model, 1.5)
    assert measured == [4] and loop.pool_active


class SwappedClasses:
    """Stands in for a model that reads every cue as the other class's: ``model``'s two class probabilities swapped."""

    def __init__(self, model) -> None:
        self.model = model

    def predict_proba(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.predict_proba(images).flip(1)


def test_a_resumed_loop_ends_as_an_uninterrupted_one(button_data, button_model, median_button, tmp_path):
    """Interrupted after its second round and resumed, a loop run ends with the weights and rounds of one that
    was not: ``last.pt`` carries the loop's rounds, bank, pool and pool checks."""
    train, _, _ = button_data
    images, labels = train.images[:64], train.labels[:64]
    button_model.save(tmp_path / "start.pt")  # a model that leans on the button: the rounds keep something
    config = TrainConfig(epochs=3, batch_size=16, lr=1e-3, seed=0)
    loop_config = LoopConfig(fraction=0.25, budget=40, warmup=0.5, refresh=1, rounds=None, pool_check=0.5)

    class StoppedAt(AdversarialAugment):
        """Ctrl-C on a batch: the eighth is in epoch 2, after its round at 1.5 epochs (4 steps per epoch)."""

        def __init__(self, stop: int | None) -> None:
            super().__init__(images, labels, loop_config, seed=0)
            self.stop, self.calls = stop, 0

        def __call__(self, *batch):
            self.calls += 1
            if self.stop is not None and self.calls >= self.stop:
                raise KeyboardInterrupt
            return super().__call__(*batch)

    def run(out: str, loop: AdversarialAugment, resume: bool = False) -> dict[str, torch.Tensor]:
        classifier = load_model(None, weights=tmp_path / "start.pt", device="cpu")
        fit(classifier, images, labels, config, out_dir=tmp_path / out, transform=loop, resume=resume)
        return classifier.model.state_dict()

    whole = StoppedAt(None)
    reference = run("whole", whole)
    with pytest.raises(KeyboardInterrupt):
        run("cut", StoppedAt(8))
    resumed_loop = StoppedAt(None)
    resumed = run("cut", resumed_loop, resume=True)

    def rounds(loop: AdversarialAugment) -> list[tuple]:
        return [(entry.epoch, entry.kept, entry.gate_lead, entry.pool_checks) for entry in loop.history]

    assert [entry.epoch for entry in whole.history] == [0.5, 1.5, 2.5] and sum(whole.history[0].kept.values())
    assert rounds(resumed_loop) == rounds(whole)
    assert all(torch.equal(reference[key], resumed[key]) for key in reference)
