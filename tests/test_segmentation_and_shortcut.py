import torch

from weakspot.cues import CUE_GROUP, cue_assignment
from weakspot.segmentation import grid_segments, segment, slic_segments
from weakspot.shortcut import make_shortcut_dataset


def test_slic_gives_consecutive_labels_per_image():
    images, _ = make_shortcut_dataset(4, 48, seed=0)
    maps = slic_segments(images.images, n_segments=30)
    assert maps.shape == (4, 48, 48)
    for label_map in maps:
        assert torch.equal(label_map.unique(), torch.arange(int(label_map.max()) + 1))
        assert 10 <= int(label_map.max()) + 1 <= 60


def test_grid_segments_are_equal_cells():
    maps = grid_segments(2, 32, 32, cells=4)
    assert torch.equal(maps[0], maps[1])
    assert torch.equal(torch.bincount(maps[0].flatten()), torch.full((16,), 64))
    assert int(segment(torch.rand(1, 3, 30, 30), "grid", n_segments=9).max()) == 8


def test_cue_assignment_follows_the_rate_per_class():
    labels = torch.tensor([0] * 100 + [1] * 100)
    present = cue_assignment(labels, cue_class=1, rate=0.95, seed=0)
    assert int(present[labels == 1].sum()) == 95 and int(present[labels == 0].sum()) == 5


def test_shortcut_dataset_pastes_a_dark_button_inside_its_box():
    imageset, boxes = make_shortcut_dataset(32, 48, cue_rate=1.0, seed=2)
    for image, label, box, cue in zip(imageset.images, imageset.labels, boxes, imageset.groups[CUE_GROUP]):
        assert (cue == "button") == bool(label == 1) == bool(box[0] >= 0)
        if box[0] >= 0:
            y0, x0, y1, x1 = box.tolist()
            centre = image[:, (y0 + y1) // 2, (x0 + x1) // 2]
            assert float(centre.max()) < 0.06


def test_median_fill_erases_a_button_and_keeps_the_shirt():
    from weakspot.fills import FILLS, fill_images
    from weakspot.cues import ButtonCue, mask_boxes

    shirt = torch.full((4, 3, 96, 96), 0.8)
    shirt[:, :, :, :24] = 0.3  # a large dark region is structure, not a cue: it stays
    buttoned, masks = ButtonCue().paste(shirt, torch.ones(4, dtype=torch.bool), torch.Generator().manual_seed(0))
    boxes = mask_boxes(masks)
    assert "median" in FILLS
    median = fill_images(buttoned, "median")
    for image, (top, left, bottom, right) in zip(median, boxes.tolist()):
        inside = image[:, top:bottom, left:right]
        expected = shirt[0, :, top:bottom, left:right]
        assert (inside - expected).abs().max() < 0.1  # the button is gone, the shirt colour is back
    assert (median[:, :, 48:, 4:14] - 0.3).abs().max() < 1e-5 and (median[:, :, :40, 60:] - 0.8).abs().max() < 1e-5
    blurred = fill_images(buttoned, "blur")
    top, left, bottom, right = boxes[0].tolist()
    assert (blurred[0, :, top:bottom, left:right] - shirt[0, :, top:bottom, left:right]).abs().max() > 0.2
