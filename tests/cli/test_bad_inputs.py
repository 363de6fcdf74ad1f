"""The CLI on bad input, case by case: each ends with exit status 2, one line on stderr and no traceback,
and leaves every file it could have touched (an earlier output, a checkpoint) byte for byte as it was.
Two unusual but valid images, a CMYK JPEG and a 16-bit PNG, must work on the embedded model.

The commands run in this process (a subprocess would spend seconds importing torch for each case);
tests/cli/test_cli_ask.py runs the same kind of errors through a real ``python -m explore.cli``.
"""

import hashlib
import io
import json
import pickle
import struct
import sys
import zlib
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml
from PIL import Image

from explore.cli import main
from explore.train.checkpoint import RUN_FILE, STATE_FILE
from explore.train.config import TrainConfig
from explore.train.loop import run_identity
from explore.data.world_export import export_vlrewardbench
from explore.world.render import render
from explore.world.splits import split_scene

ROOT = Path(__file__).resolve().parents[2]
QUESTION = "What colour is the circle?"


class _Exploit:
    """Unpickling this creates the file ``marker``: a stand-in for a payload that runs code."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def png_16bit(image: Image.Image) -> bytes:
    """``image`` as a 16-bit-per-channel RGB PNG (Pillow cannot write one)."""
    pixels = np.asarray(image.convert("RGB")).astype(">u2") * 257  # 8-bit k → 16-bit 257·k
    rows = b"".join(b"\x00" + row.tobytes() for row in pixels)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", pixels.shape[1], pixels.shape[0], 16, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width × height over a few bytes of pixel data: a decompression bomb's shape."""
    image = io.BytesIO()
    Image.new("RGB", (1, 1)).save(image, format="PNG")
    data = bytearray(image.getvalue())
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))  # the IHDR chunk's CRC
    return bytes(data)


def tiny_pretrain_config(**changes) -> dict:
    data = yaml.safe_load((ROOT / "configs/pretrain/tiny-t5.yaml").read_text())
    data.update(changes)
    return data


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    """Every input file of the catalogue, good and bad."""
    folder = tmp_path_factory.mktemp("inputs")
    scene = render(split_scene("test", 0))  # a large circle among three other shapes
    scene.save(folder / "scene.png")
    scene.convert("CMYK").save(folder / "cmyk.jpg", quality=95)
    assert Image.open(folder / "cmyk.jpg").mode == "CMYK"
    (folder / "deep.png").write_bytes(png_16bit(scene))
    assert (folder / "deep.png").read_bytes()[24] == 16  # bit depth in the IHDR chunk
    encoded = (folder / "scene.png").read_bytes()
    (folder / "truncated.png").write_bytes(encoded[: len(encoded) // 2])
    (folder / "page.jpg").write_text("<!DOCTYPE html>\n<html><body>403 Forbidden</body></html>\n")
    (folder / "bomb.png").write_bytes(png_header_only(100_000, 100_000))
    (folder / "empty.png").write_bytes(b"")
    table = pq.read_table(export_vlrewardbench(folder / "vlrb", 2, seed=0, split="test", resolution=16))
    pq.write_table(table.drop(["judge"]), folder / "missing-column.parquet")
    (folder / "unknown-key.yaml").write_text(yaml.safe_dump(tiny_pretrain_config(learning_rate=0.1)))
    (folder / "tiny-llama.yaml").write_text(yaml.safe_dump(tiny_pretrain_config(model={"preset": "tiny-llama"})))
    (folder / "negative-batch.yaml").write_text(yaml.safe_dump({"method": "lora", "batch_size": -4}))
    (folder / "evil.pt").write_bytes(pickle.dumps(_Exploit(folder / "pwned.txt")))
    return folder


@pytest.fixture
def saved(tmp_path) -> Path:
    """Outputs of earlier runs that a failed command must leave alone: answers, an evaluation, a checkpoint, an adapter."""
    folder = tmp_path / "saved"
    folder.mkdir()
    (folder / "answers.jsonl").write_text('{"id": "scene.png", "answer": "red"}\n')
    (folder / "eval").mkdir()
    (folder / "eval" / "predictions.jsonl").write_text('{"id": "0", "score": 1.0}\n')
    (folder / "eval" / "summary.json").write_text('{"examples": 1}\n')
    step = folder / "run" / "checkpoints" / "step-0000004"
    step.mkdir(parents=True)
    (step / RUN_FILE).write_text(json.dumps(run_identity(TrainConfig.model_validate(tiny_pretrain_config()))))
    (step / STATE_FILE).write_text('{"global_step": 4, "stage": 0, "stage_step": 4, "data_position": 32}')
    (step / "optimizer.pt").write_bytes(b"state")
    (folder / "adapter").mkdir()
    (folder / "adapter" / "adapter_config.json").write_text("{}")
    return folder


def snapshot(*folders: Path) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for f in folders for p in sorted(f.rglob("*"))
            if p.is_file()}  # fmt: skip


def run(monkeypatch, capfd, *args: str) -> tuple[int, str, str]:
    """``explore *args`` in this process: exit status, stdout, stderr."""
    monkeypatch.setattr(sys, "argv", ["explore", *args])
    try:
        main()
        code = 0
    except SystemExit as exit:
        code = int(exit.code)
    out, err = capfd.readouterr()
    return code, out, err


ASK = ["ask", "{in}/scene.png", QUESTION, "--out", "{saved}/answers.jsonl"]
CASES = {
    "truncated PNG": (["ask", "{in}/truncated.png", QUESTION, "--out", "{saved}/answers.jsonl"], "truncated"),
    "JPEG that is really HTML": (
        ["ask", "{in}/page.jpg", QUESTION, "--out", "{saved}/answers.jsonl"],
        "is an HTML/XML page, not an image",
    ),
    "decompression bomb": (
        ["ask", "{in}/bomb.png", QUESTION, "--out", "{saved}/answers.jsonl"],
        "possible decompression bomb",
    ),
    "empty image": (["ask", "{in}/empty.png", QUESTION, "--out", "{saved}/answers.jsonl"], "empty (0 bytes)"),
    "parquet missing a column": (
        ["eval", "--task", "vl-rewardbench", "--data", "{in}/missing-column.parquet", "--out", "{saved}/eval"],
        "missing-column.parquet: missing columns ['judge']",
    ),
    "config with an unknown key": (
        ["pretrain", "--config", "{in}/unknown-key.yaml", "--output-dir", "{saved}/run"],
        "unknown key 'learning_rate'; allowed keys here: checkpoint_every, data, eval, keep_checkpoints, model, output_dir, seed, stages",
    ),
    "missing model folder": ([*ASK, "--model", "{in}/no-such-model"], "no-such-model does not exist"),
    "pickle model file": ([*ASK, "--model", "{in}/evil.pt"], "can run arbitrary code when loaded"),
    "negative batch size": ([*ASK, "--batch-size", "-1"], "--batch-size must be a positive integer, got -1"),
    "negative eval batch size": (
        ["eval", "--task", "world-vqa", "--batch-size", "-2", "--out", "{saved}/eval"],
        "--batch-size must be a positive integer or 'auto'",
    ),
    "negative batch size in a config": (
        ["finetune", "--config", "{in}/negative-batch.yaml", "--output", "{saved}/adapter"],
        "invalid value for 'batch_size'",
    ),
    "resume from a wrong path": (
        ["pretrain", "--config", "{in}/tiny-llama.yaml", "--output-dir", "{saved}/run", "--resume", "{in}/nowhere"],
        "--resume {in}/nowhere: no such folder",
    ),
    "resume with another preset": (
        ["pretrain", "--config", "{in}/tiny-llama.yaml", "--output-dir", "{saved}/run", "--resume", "latest"],
        "model.preset = 'tiny-t5', but the config now says 'tiny-llama'",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_and_damages_nothing(inputs, saved, monkeypatch, capfd, case):
    template, message = CASES[case]
    args = [arg.format(**{"in": inputs, "saved": saved}) for arg in template]
    before = snapshot(saved, inputs)
    code, out, err = run(monkeypatch, capfd, *args)
    assert code == 2, (code, out, err)
    assert message.format(**{"in": inputs}) in err, err
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: ") and "Traceback" not in err, err
    assert snapshot(saved, inputs) == before  # no earlier output or checkpoint changed, nothing new written
    assert not (inputs / "pwned.txt").exists()  # the pickle was never unpickled


@pytest.mark.parametrize("image", ["cmyk.jpg", "deep.png"])
def test_cmyk_jpeg_and_16_bit_png_work_like_the_rgb_original(inputs, monkeypatch, capfd, image):
    code, expected, err = run(monkeypatch, capfd, "ask", str(inputs / "scene.png"), QUESTION)
    assert code == 0, err
    code, answer, err = run(monkeypatch, capfd, "ask", str(inputs / image), QUESTION)
    assert code == 0, err
    assert answer.count("\n") == 1 and answer == expected  # one answer line, the one the RGB PNG gets
