"""``weakspot explain``: a PNG per method, and one-line errors (exit 2) for bad inputs."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from weakspot.cli import main


@pytest.fixture(scope="module")
def button_files(button_model, button_data, tmp_path_factory):
    folder = tmp_path_factory.mktemp("explain")
    _, test, boxes = button_data
    row = int((boxes[:, 0] >= 0).nonzero()[0])
    image_path = folder / "button.png"
    Image.fromarray((test.images[row].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(image_path)
    return button_model.save(folder / "button.pt"), image_path


@pytest.mark.parametrize("method", ["lime", "shap", "gradcam", "occlusion"])
def test_explain_writes_a_png(button_files, tmp_path, capsys, method):
    checkpoint, image = button_files
    out = tmp_path / f"{method}.png"
    arguments = ["explain", "--checkpoint", str(checkpoint), "--image", str(image), "--method", method,
                 "--out", str(out), "--size", "48"]
    if method in ("lime", "shap"):
        arguments += ["--samples", "200"]
    assert main(arguments) == 0
    with Image.open(out) as picture:
        assert picture.format == "PNG" and picture.width > 500
    assert "'wide'" in capsys.readouterr().out
    assert not list(tmp_path.glob(".*.tmp"))


def test_explain_errors_are_one_line_exit_2(button_files, tmp_path, capsys):
    checkpoint, image = button_files
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    bad_checkpoint = tmp_path / "bad.pt"
    bad_checkpoint.write_bytes(b"junk")
    cases = [(checkpoint, tmp_path / "missing.png", "missing.png: image not found"),
             (checkpoint, corrupt, "corrupt.png: not a readable image"),
             (bad_checkpoint, image, "bad.pt: not a readable checkpoint"),
             (tmp_path / "none.pt", image, "none.pt: checkpoint not found")]
    for checkpoint_path, image_path, message in cases:
        assert main(["explain", "--checkpoint", str(checkpoint_path), "--image", str(image_path),
                     "--method", "occlusion", "--out", str(tmp_path / "x.png")]) == 2
        error = capsys.readouterr().err.strip()
        assert error.count("\n") == 0 and message in error
    assert main(["explain", "--checkpoint", str(checkpoint), "--image", str(image), "--method", "gradcam",
                 "--out", str(tmp_path / "x.png"), "--samples", "10"]) == 2
    assert "--samples does not apply to gradcam" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()
