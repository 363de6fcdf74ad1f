"""``explore eval --task world-t2i`` killed for real (SIGKILL, in a forked child) at five durable writes the
test picks among an uninterrupted run's, and in the middle of writing a predictions line, then resumed:
predictions, images and summary end byte for byte as the uninterrupted run's; a resume with another sampler
is refused with one line."""

from dataclasses import replace

import pytest

from explore.models.build import build_model, build_processor
from explore.models.loading import save_model
from explore.models.presets import get_preset
from explore.models.tokenizer import build_word_tokenizer
from explore.world.vocabulary import vocabulary


@pytest.fixture(scope="module")
def judge_dir(tmp_path_factory):
    preset = replace(get_preset("tiny-t5"), name="tiny-t5-judge", vision_layers=3)  # Fréchet features: layers 2, 3
    words = vocabulary()
    tokenizer, qformer_tokenizer = build_word_tokenizer(words), build_word_tokenizer(words, image_token=False)
    return save_model(build_model(preset, tokenizer, seed=0), build_processor(preset, tokenizer, qformer_tokenizer),
                      tmp_path_factory.mktemp("judge") / "vlm")  # fmt: skip


def folder_bytes(folder) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def t2i_args(pipeline, judge, out, *extra: str) -> list[str]:
    return ["eval", "--task", "world-t2i", "--checkpoint", str(pipeline), "--model", str(judge), "--limit", "2",
            "--steps", "2", "--batch-size", "2", "--out", str(out), *extra]  # fmt: skip


def test_t2i_killed_at_five_points_resumes_to_the_uninterrupted_output(forked_explore, tiny_pipeline_dir,
                                                                       judge_dir, tmp_path):  # fmt: skip
    reference = forked_explore(*t2i_args(tiny_pipeline_dir, judge_dir, tmp_path / "reference"))
    assert reference.code == 0, reference.log
    expected = folder_bytes(tmp_path / "reference")
    assert {"header.json", "predictions.jsonl", "summary.json", "images/test-t2i-000001.png"} <= set(expected)
    for point in forked_explore.kill_points(reference.events["fsync"]):
        out = tmp_path / f"killed-at-{point}"
        killed = forked_explore(*t2i_args(tiny_pipeline_dir, judge_dir, out), event="fsync", kill_at=point)
        assert killed.killed, f"fsync {point}: {killed.log}"
        resumed = forked_explore(*t2i_args(tiny_pipeline_dir, judge_dir, out))
        assert resumed.code == 0, resumed.log
        assert folder_bytes(out) == expected, f"killed at fsync {point}"
    # the issue's own case: a predictions line cut by the kill was redone forever and never summarised
    for point in sorted({1, reference.events["append"]}):
        out = tmp_path / f"cut-in-append-{point}"
        killed = forked_explore(*t2i_args(tiny_pipeline_dir, judge_dir, out), event="append", kill_at=point)
        assert killed.killed and (out / "predictions.jsonl").read_bytes()[-1:] != b"\n", killed.log
        resumed = forked_explore(*t2i_args(tiny_pipeline_dir, judge_dir, out))
        assert resumed.code == 0, resumed.log
        assert folder_bytes(out) == expected, f"cut in append {point}"

    other = forked_explore(*t2i_args(tiny_pipeline_dir, judge_dir, tmp_path / "reference", "--scheduler", "ddim"))
    assert other.code == 2
    (line,) = other.log.strip().splitlines()
    assert line.startswith(f"error: {tmp_path / 'reference'} was written with scheduler = "
                           "'DPMSolverMultistepScheduler', but this run has scheduler = 'DDIMScheduler'")
    assert folder_bytes(tmp_path / "reference") == expected
