"""`explore generate`: writes the PNG, the same bytes for the same seed; a clear error without a model."""

import sys

import pytest
from typer.testing import CliRunner

from explore.cli import app, main


def _generate(folder, out, seed):
    args = ["generate", "a red circle above a blue square", "-n", "2", "--steps", "3", "--seed", str(seed),
            "--scheduler", "ddim", "--checkpoint", str(folder), "--out", str(out)]  # fmt: skip
    return CliRunner().invoke(app, args, catch_exceptions=False)


def test_generate_writes_the_same_png_for_the_same_seed(tiny_pipeline_dir, tmp_path):
    from PIL import Image

    for name, seed in (("a.png", 7), ("b.png", 7), ("c.png", 8)):
        result = _generate(tiny_pipeline_dir, tmp_path / name, seed)
        assert result.exit_code == 0, result.output
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()
    assert (tmp_path / "a.png").read_bytes() != (tmp_path / "c.png").read_bytes()
    with Image.open(tmp_path / "a.png") as image:
        assert image.size == (2 * (32 * 4 + 2) + 2, 32 * 4 + 4)


def test_missing_packaged_model_is_one_line_that_says_how_to_train(tmp_path, monkeypatch, capsys):
    from explore.diffusion import pipeline as pipeline_module

    monkeypatch.setattr(pipeline_module, "packaged_folder", lambda: tmp_path / "not-trained-yet")
    monkeypatch.setattr(sys, "argv", ["explore", "generate", "a red circle", "--out", str(tmp_path / "x.png")])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "explore diffusion train --config configs/diffusion/shapes-small.yaml" in " ".join(err.split())
    assert "Traceback" not in err
