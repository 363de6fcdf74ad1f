"""``explore eval`` killed for real (SIGKILL, in a forked child) at points the test picks among the durable
writes an uninterrupted run makes, and in the middle of writing a predictions line, then resumed: the folder
ends byte for byte as the uninterrupted run's.
And a resume into a folder written by another model or judge is refused with one line."""

import pytest

from explore.models.build import build_model, build_processor
from explore.models.loading import save_model
from explore.models.tokenizer import build_word_tokenizer
from explore.world.vocabulary import vocabulary


def tiny_model(folder, seed: int):
    words = vocabulary()
    tokenizer, qformer_tokenizer = build_word_tokenizer(words), build_word_tokenizer(words, image_token=False)
    model = build_model("tiny-t5", tokenizer, seed=seed)
    return save_model(model, build_processor("tiny-t5", tokenizer, qformer_tokenizer), folder)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return tiny_model(root / "a", seed=0), tiny_model(root / "b", seed=1)


def folder_bytes(folder) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def eval_args(model, out, task="world-vqa", *extra: str) -> list[str]:
    return ["eval", "--task", task, "--model", str(model), "--limit", "8", "--batch-size", "2", "--out", str(out),
            *extra]  # fmt: skip


def test_eval_killed_at_five_points_resumes_to_the_uninterrupted_output(forked_explore, models, tmp_path):
    reference = forked_explore(*eval_args(models[0], tmp_path / "reference"))
    assert reference.code == 0, reference.log
    expected = folder_bytes(tmp_path / "reference")
    assert sorted(expected) == ["header.json", "predictions.jsonl", "summary.json"]
    points = forked_explore.kill_points(reference.events["fsync"])  # header, 4 appends, summary: 12 fsyncs
    assert len(points) == 5
    for point in points:
        out = tmp_path / f"killed-at-{point}"
        killed = forked_explore(*eval_args(models[0], out), event="fsync", kill_at=point)
        assert killed.killed, f"fsync {point}: {killed.log}"
        resumed = forked_explore(*eval_args(models[0], out))
        assert resumed.code == 0, resumed.log
        assert folder_bytes(out) == expected, f"killed at fsync {point}"
    for point in sorted({1, reference.events["append"]}):  # a line cut by the kill: first and last append
        out = tmp_path / f"cut-in-append-{point}"
        killed = forked_explore(*eval_args(models[0], out), event="append", kill_at=point)
        assert killed.killed and (out / "predictions.jsonl").read_bytes()[-1:] != b"\n", killed.log
        resumed = forked_explore(*eval_args(models[0], out))
        assert resumed.code == 0, resumed.log
        assert folder_bytes(out) == expected, f"cut in append {point}"


def test_resume_with_another_model_or_judge_is_refused(forked_explore, models, tmp_path):
    out = tmp_path / "vqa"
    assert forked_explore(*eval_args(models[0], out)).code == 0
    before = folder_bytes(out)
    other = forked_explore(*eval_args(models[1], out))
    assert other.code == 2, other.log
    lines = other.log.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {out} was written with model = '"), other.log
    assert "but this run has model = '" in lines[0]
    assert folder_bytes(out) == before

    judge = tmp_path / "judge"
    assert forked_explore(*eval_args(models[0], judge, "world-judge")).code == 0
    generative = forked_explore(*eval_args(models[0], judge, "world-judge", "--judge", "generative"))
    assert generative.code == 2
    assert generative.log.strip() == (f"error: {judge} was written with judge = 'likelihood', but this run has "
                                      "judge = 'generative'; resume with the same settings, or use a new --out folder")


def test_eval_into_a_folder_that_cannot_be_written_is_one_line(forked_explore, models):
    r = forked_explore(*eval_args(models[0], "/sys/explore-nope"))  # /sys refuses new entries even to root
    assert r.code == 2, r.log
    (line,) = r.log.strip().splitlines()
    assert line.startswith("error: cannot write /sys/explore-nope/header.json: ") and "writable folder" in line
