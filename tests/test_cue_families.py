"""Cue families of the planted-shortcut generator: masks say exactly what changed, seeds fix the layout,
the benchmark records the family, and bad CLI values are one-line errors."""

from __future__ import annotations

import csv
from collections import Counter

import pytest
import torch

from weakspot.cli import main
from weakspot.cues import (CUE_FAMILIES, CUE_GROUP, ButtonCue, StickerCue, TintCue, configure_cue, mask_boxes,
                           parse_colour, place_cue)
from weakspot.errors import WeakspotError
from weakspot.shortcut import build_shortcut_benchmark, make_shortcut_dataset, write_imageset


def _images(count: int = 6, size: int = 40) -> torch.Tensor:
    """Mid-grey noise: no cue colour (pure black, white or saturated) occurs by chance."""
    return 0.3 + 0.4 * torch.rand(count, 3, size, size, generator=torch.Generator().manual_seed(7))


@pytest.mark.parametrize("name", list(CUE_FAMILIES))
def test_every_family_changes_exactly_its_mask_and_nothing_where_absent(name):
    images = _images()
    present = torch.tensor([True, False, True, True, False, True])
    cue = place_cue(CUE_FAMILIES[name], seed=0)
    pasted, masks = cue.paste(images, present, torch.Generator().manual_seed(1))
    assert masks.shape == (6, 40, 40) and masks.dtype == torch.bool
    changed = (pasted != images).any(dim=1)
    assert torch.equal(changed, masks)
    assert not masks[~present].any() and masks[present].flatten(1).any(dim=1).all()
    assert pasted.min() >= 0 and pasted.max() <= 1
    if name == "tint":
        assert masks[present].all() and (pasted - images).abs().max() <= cue.size_frac + 1e-6
    else:
        assert masks[present].float().mean() < 0.2  # small and local


@pytest.mark.parametrize("name", list(CUE_FAMILIES))
def test_every_family_is_deterministic_per_generator_seed(name):
    images, present = _images(), torch.ones(6, dtype=torch.bool)
    cue = CUE_FAMILIES[name]
    first = cue.paste(images, present, torch.Generator().manual_seed(3))[1]
    again = cue.paste(images, present, torch.Generator().manual_seed(3))[1]
    assert torch.equal(first, again)
    if name != "tint":  # the jitter moves local cues with the seed
        assert not torch.equal(first, cue.paste(images, present, torch.Generator().manual_seed(4))[1])


def test_the_corner_stamp_moves_between_all_four_corners():
    images, present = _images(count=200), torch.ones(200, dtype=torch.bool)
    _, masks = CUE_FAMILIES["corners"].paste(images, present, torch.Generator().manual_seed(0))
    boxes = mask_boxes(masks).float()
    centres_x, centres_y = (boxes[:, 1] + boxes[:, 3]) / 2 / 40, (boxes[:, 0] + boxes[:, 2]) / 2 / 40
    corners = Counter(zip((centres_x > 0.5).tolist(), (centres_y > 0.5).tolist()))
    assert len(corners) == 4 and min(corners.values()) > 30  # each corner about a quarter of the images
    assert ((centres_x - 0.5).abs() > 0.3).all() and ((centres_y - 0.5).abs() > 0.3).all()


def test_sticker_position_comes_from_the_build_seed_unless_given():
    sticker = StickerCue()
    assert sticker.position is None
    assert place_cue(sticker, 0) == place_cue(sticker, 0)
    assert place_cue(sticker, 0).position != place_cue(sticker, 1).position
    assert place_cue(StickerCue(position=(0.2, 0.3)), 5).position == (0.2, 0.3)
    for seed in range(20):  # never at the extreme borders
        assert all(0.15 <= value <= 0.85 for value in place_cue(sticker, seed).position)


def test_mask_boxes_bound_the_masks():
    masks = torch.zeros(2, 10, 12, dtype=torch.bool)
    masks[0, 2:5, 3:9] = True
    assert mask_boxes(masks).tolist() == [[2, 3, 5, 9], [-1, -1, -1, -1]]


def test_shortcut_dataset_takes_any_family():
    imageset, boxes = make_shortcut_dataset(16, 32, cue_rate=1.0, seed=0, cue=TintCue(size_frac=0.2))
    assert set(imageset.groups[CUE_GROUP]) == {"tint", "none"}
    assert ((boxes[:, 0] >= 0) == (imageset.labels == 1)).all()
    default, _ = make_shortcut_dataset(8, 32, seed=0)
    explicit, _ = make_shortcut_dataset(8, 32, seed=0, cue=ButtonCue())
    assert torch.equal(default.images, explicit.images) and default.groups[CUE_GROUP][0] in ("button", "none")


def test_configure_cue_replaces_options_and_refuses_what_a_family_lacks():
    assert configure_cue("button", colour=parse_colour("red"), size=0.2).colour == (0.9, 0.1, 0.1)
    assert configure_cue("patch", colour=parse_colour("0,0.5,1")).colour == (0.0, 0.5, 1.0)
    with pytest.raises(WeakspotError, match="no --cue-jitter, --cue-position option"):
        configure_cue("tint", position=(0.5, 0.5), jitter=0.1)
    with pytest.raises(WeakspotError, match="unknown cue 'scarf'"):
        configure_cue("scarf")
    for text in ("purple", "1,2,3", "0.5,0.5"):
        with pytest.raises(WeakspotError, match="--cue-colour"):
            parse_colour(text)


@pytest.fixture(scope="module")
def source_dir(tmp_path_factory):
    imageset, _ = make_shortcut_dataset(80, 32, cue_rate=0.5, signal=1.0, seed=3, cue=TintCue(size_frac=0.0))
    imageset.groups = {}
    return write_imageset(imageset, tmp_path_factory.mktemp("source") / "shapes", label="shape")


def _rows(folder):
    with open(folder / "labels.csv", newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.parametrize("name", ["sticker", "stroke"])
def test_benchmark_writes_the_family_name_and_keeps_the_rates(source_dir, tmp_path, name):
    build_shortcut_benchmark(source_dir, "shape", tmp_path / "bench", cue=name, rate=0.9, cue_class="tall",
                             size=32, seed=2)
    counts = Counter((row["split"], row["shape"], row["cue"]) for row in _rows(tmp_path / "bench"))
    assert {cue for _, _, cue in counts} == {name, "none"}
    for split in ("train", "val"):  # the cue class is the first one here: 90% of "tall", 10% of "wide"
        for shape, share in (("tall", 0.9), ("wide", 0.1)):
            total = counts[(split, shape, name)] + counts[(split, shape, "none")]
            assert counts[(split, shape, name)] == round(share * total)
    for shape in ("tall", "wide"):
        assert abs(counts[("test", shape, name)] - counts[("test", shape, "none")]) <= 1
        assert counts[("clean_test", shape, name)] == 0


def _exit_code(argv: list[str]) -> int:
    """``main``'s return value, or its exit code when argparse refuses the arguments first."""
    try:
        return main(argv)
    except SystemExit as exit_info:
        return int(exit_info.code)


def test_cli_builds_a_configured_cue_and_refuses_bad_values(source_dir, tmp_path, capsys):
    base = ["data", "shortcut", "--source", str(source_dir), "--label", "shape", "--size", "32"]
    assert main([*base, "--cue", "button", "--cue-colour", "white", "--cue-size", "0.2",
                 "--out", str(tmp_path / "ok")]) == 0
    assert {row["cue"] for row in _rows(tmp_path / "ok")} == {"button", "none"}
    capsys.readouterr()
    for flags in (["--cue", "tint", "--cue-position", "0.5,0.5"], ["--cue-colour", "purple"],
                  ["--cue-size", "0"], ["--cue-jitter", "2"], ["--cue-position", "1.5,0.2"],
                  ["--cue", "scarf"], ["--cue-size", "big"]):
        assert _exit_code([*base, *flags, "--out", str(tmp_path / "bad")]) == 2
        error = capsys.readouterr().err.strip()
        assert error and "\n" not in error, flags
    assert not (tmp_path / "bad").exists()
