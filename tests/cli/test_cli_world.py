import subprocess
import sys

from PIL import Image


def run(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "explore.cli", *args], capture_output=True, text=True, cwd=cwd)


def test_world_export_and_show(tmp_path):
    r = run("world", "export", "--out", str(tmp_path / "w"), "--n", "4", "--seed", "1")
    assert r.returncode == 0, r.stderr
    assert len(list((tmp_path / "w" / "images").glob("*.png"))) == 4
    r = run("world", "show", "--out", str(tmp_path / "sheet.png"), "--n", "4")
    assert r.returncode == 0, r.stderr
    assert Image.open(tmp_path / "sheet.png").size[0] > 4 * 64


def test_bad_arguments_give_one_line_errors(tmp_path):
    cases = [
        (["world", "export", "--out", str(tmp_path), "--format", "csv"], "unknown --format"),
        (["world", "export", "--out", str(tmp_path), "--n", "-3"], "--n must be a positive integer"),
        (["world", "export", "--out", str(tmp_path), "--split", "dev"], "unknown --split"),
        (["world", "show", "--out", str(tmp_path / "sheet.jpg")], "must be a .png"),
    ]
    for args, message in cases:
        r = run(*args)
        assert r.returncode == 2, (args, r.stderr)
        assert message in r.stderr and "Traceback" not in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
