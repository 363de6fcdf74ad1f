import inspect
import json
import subprocess
import sys

import pytest

from explore.cli.use import ask_command
from explore.eval.scoring import RELATION_MAX_NEW_TOKENS
from explore.models.build import build_model, build_processor
from explore.models.loading import save_model
from explore.models.tokenizer import build_word_tokenizer
from explore.serve import ask as ask_tab
from explore.world.render import render
from explore.world.splits import split_scene
from explore.world.vocabulary import vocabulary


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    words = vocabulary()
    tokenizer, qformer_tokenizer = build_word_tokenizer(words), build_word_tokenizer(words, image_token=False)
    folder = tmp_path_factory.mktemp("model") / "tiny"
    save_model(build_model("tiny-t5", tokenizer, seed=0), build_processor("tiny-t5", tokenizer, qformer_tokenizer), folder)
    return folder


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    for i in range(3):
        render(split_scene("test", i)).save(folder / f"scene-{i}.png")
    return folder


def run(*args):
    env_args = [sys.executable, "-m", "explore.cli", *args]
    return subprocess.run(env_args, capture_output=True, text=True, env={"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
                                                                       "PATH": "/usr/bin:/bin"})  # fmt: skip


def test_ask_one_image_prints_one_answer(model_dir, images):
    r = run("ask", str(images / "scene-0.png"), "What colour is the circle?", "--model", str(model_dir))
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("\n") == 1  # one answer line (a random tiny model may answer with nothing)


def test_ask_folder_and_jsonl_write_jsonl(model_dir, images, tmp_path):
    out = tmp_path / "answers.jsonl"
    r = run("ask", str(images), "How many objects are there?", "--model", str(model_dir), "--out", str(out))
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [row["id"] for row in rows] == ["scene-0.png", "scene-1.png", "scene-2.png"]
    assert all(set(row) == {"id", "image", "prompt", "answer"} for row in rows)

    requests = tmp_path / "requests.jsonl"
    requests.write_text("\n".join(json.dumps({"image": str(images / f"scene-{i}.png"), "question": f"q{i}?"})
                                  for i in range(2)))  # fmt: skip
    r = run("caption", str(requests), "--model", str(model_dir), "--out", str(tmp_path / "captions.jsonl"))
    assert r.returncode == 0, r.stderr
    assert len((tmp_path / "captions.jsonl").read_text().splitlines()) == 2


def test_ask_errors_are_one_line(model_dir, images, tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes((images / "scene-0.png").read_bytes()[:60])
    html = tmp_path / "page.jpg"
    html.write_text("<html><body>not an image</body></html>")
    cases = [
        (["ask", str(tmp_path / "missing.png"), "q?", "--model", str(model_dir)], "no such file or folder"),
        (["ask", str(bad), "q?", "--model", str(model_dir)], "broken.png"),
        (["ask", str(html), "q?", "--model", str(model_dir)], "page.jpg"),
        (["ask", str(images / "scene-0.png"), "q?", "--model", "shapes-smal"], "shapes-small"),
        (["ask", str(images / "scene-0.png"), "q?", "--model", str(tmp_path)], "config.json"),
    ]
    for args, message in cases:
        r = run(*args)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        assert message in r.stderr and "Traceback" not in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_ask_prints_a_stepwise_relation_answer_whole(images):
    """The embedded model answers a relation question step by step (about 30 tokens); `explore ask` leaves it room
    (the default was 16 new tokens, which cut the answer before its yes / no)."""
    question = "Is the orange triangle above the cyan circle?"  # test scene 0: yes (the README's example)
    r = run("ask", str(images / "scene-0.png"), question)
    assert r.returncode == 0, r.stderr
    answer = r.stdout.strip()
    assert "compared to" in answer and answer.endswith(". yes"), answer


def test_ask_budget_is_the_evaluators_and_the_web_apps():
    """`explore ask` writes its default as a literal (the CLI imports no model code at start-up); it must stay the
    evaluator's relation budget, which the web app's question tab uses too."""
    default = next(p.default for p in inspect.signature(ask_command).parameters.values() if p.name == "max_new_tokens")
    assert default == RELATION_MAX_NEW_TOKENS == ask_tab.MAX_NEW_TOKENS["question"]
