"""``accelerate launch --multi_gpu --num_processes 2 -m explore eval``: two CPU processes (gloo) share the batches and write
the predictions and the summary of one process, byte for byte."""

import os
import socket
import subprocess
import sys

import pytest

from explore.models.build import build_model, build_processor
from explore.models.loading import save_model
from explore.models.tokenizer import build_word_tokenizer
from explore.world.vocabulary import vocabulary


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    words = vocabulary()
    tokenizer, qformer_tokenizer = build_word_tokenizer(words), build_word_tokenizer(words, image_token=False)
    model, processor = build_model("tiny-t5", tokenizer, seed=0), build_processor("tiny-t5", tokenizer, qformer_tokenizer)
    return save_model(model, processor, tmp_path_factory.mktemp("tiny") / "model")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_processes_write_what_one_writes(tiny_folder, tmp_path, explore_cli):
    # 9 questions in batches of 2: 5 batches, so one process gets 3 and the other 2
    args = ["eval", "--task", "world-vqa", "--model", str(tiny_folder), "--limit", "9", "--batch-size", "2"]
    code, _, err = explore_cli(*args, "--out", str(tmp_path / "one"))
    assert code == 0, err
    env = {"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
           "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
           **({"PYTHONPATH": os.environ["PYTHONPATH"]} if "PYTHONPATH" in os.environ else {})}  # fmt: skip
    # --multi_gpu is accelerate's torchrun launcher; on a machine without a GPU its processes use the CPU and gloo
    # (`--cpu` would start one process only)
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines",
              "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port()),
              "-m", "explore", *args, "--out", str(tmp_path / "two")]  # fmt: skip
    two = subprocess.run(launch, capture_output=True, text=True, env=env, timeout=300, check=False)
    assert two.returncode == 0, two.stderr[-3000:]
    assert two.stdout.count("wrote ") == 1 and "summary.json (2 processes)" in two.stdout  # from the main process
    for name in ("predictions.jsonl", "summary.json", "header.json"):
        assert (tmp_path / "two" / name).read_bytes() == (tmp_path / "one" / name).read_bytes(), name
