"""The evaluation runner on a tiny model: every task, both judges, resume after interruption."""

import json

import pytest
from explore.errors import ExploreError
from explore.eval import runner
from explore.eval.runner import run_task
from explore.eval.tasks import TASKS, TaskOptions, get_task
from explore.models.build import build_model, build_processor
from explore.models.tokenizer import build_word_tokenizer
from explore.world.vocabulary import vocabulary


@pytest.fixture(scope="module")
def tiny():
    words = vocabulary()
    tokenizer, qformer_tokenizer = build_word_tokenizer(words), build_word_tokenizer(words, image_token=False)
    return build_model("tiny-t5", tokenizer, seed=0), build_processor("tiny-t5", tokenizer, qformer_tokenizer)


def world(task: str, n: int = 12) -> list:
    return get_task(task).load(TaskOptions(split="test", limit=n, resolution=16))


@pytest.mark.parametrize("name", ["world-vqa", "world-caption", "world-judge"])
def test_world_tasks_write_predictions_and_summary(tiny, tmp_path, name):
    model, processor = tiny
    summary = run_task(model, processor, get_task(name), world(name), tmp_path, batch_size=5, progress=False)
    records = [json.loads(line) for line in (tmp_path / "predictions.jsonl").read_text().splitlines()]
    assert len(records) == 12 == summary["examples"]
    assert all({"id", "prompt", "output", "score"} <= set(r) for r in records)
    assert json.loads((tmp_path / "summary.json").read_text()) == summary
    if name == "world-vqa":
        assert set(summary["exact_match"]) >= {"overall", "colour", "count"}
    elif name == "world-caption":
        assert {"bleu4", "cider_d", "exact_scene"} <= set(summary)
    else:
        assert summary["parse_rate"] == 1.0  # the likelihood judge always chooses


def test_resume_after_interruption_gives_the_same_summary(tiny, tmp_path, monkeypatch):
    model, processor = tiny
    task = get_task("world-vqa")
    reference = run_task(model, processor, task, world("world-vqa"), tmp_path / "ref", batch_size=4, progress=False)

    calls = {"n": 0}
    real_call = runner.Predictor.__call__

    def dies_on_second_batch(self, batch):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real_call(self, batch)

    monkeypatch.setattr(runner.Predictor, "__call__", dies_on_second_batch)
    with pytest.raises(KeyboardInterrupt):
        run_task(model, processor, task, world("world-vqa"), tmp_path / "run", batch_size=4, progress=False)
    partial = (tmp_path / "run" / "predictions.jsonl").read_text().splitlines()
    assert len(partial) == 4
    with (tmp_path / "run" / "predictions.jsonl").open("a") as f:
        f.write('{"id": "cut off by a cra')  # a half-written line from a crash is redone

    calls["n"] = -100
    resumed = run_task(model, processor, task, world("world-vqa"), tmp_path / "run", batch_size=4, progress=False)
    ids = [json.loads(line)["id"] for line in (tmp_path / "run" / "predictions.jsonl").read_text().splitlines()
           if line.startswith('{"id": "test')]  # fmt: skip
    assert len(ids) == len(set(ids)) == 12
    assert resumed["exact_match"] == reference["exact_match"]


def test_resume_refuses_a_folder_of_another_task(tiny, tmp_path):
    model, processor = tiny
    run_task(model, processor, get_task("world-vqa"), world("world-vqa", 3), tmp_path, batch_size=3, progress=False)
    with pytest.raises(ExploreError, match="new --out folder"):
        run_task(model, processor, get_task("world-judge"), world("world-judge", 3), tmp_path, progress=False)


def test_generative_judge_runs_the_official_protocol(tiny, tmp_path):
    model, processor = tiny
    summary = run_task(model, processor, get_task("world-judge"), world("world-judge", 6), tmp_path, batch_size=3,
                       judge="generative", judge_samples=3, progress=False)  # fmt: skip
    records = [json.loads(line) for line in (tmp_path / "predictions.jsonl").read_text().splitlines()]
    assert all(len(r["samples"]) == 3 and r["choice"] in (0, 1, None) for r in records)
    assert 0.0 <= summary["parse_rate"] <= 1.0
    # a random tiny model almost never writes "Answer X is better": unparsed items are dropped
    assert summary["counts"]["total"] == 6


def test_batch_size_auto_steps_down_until_a_batch_fits(tiny, tmp_path, monkeypatch):
    """A model that runs out of memory above 3 examples a batch: auto steps down from 256 (accelerate's
    find_executable_batch_size: x0.9 each time, ... 5, 4, 3) to the first size that fits and evaluates with it."""
    model, processor = tiny
    real_call, sizes = runner.Predictor.__call__, []

    def at_most_three(self, batch):
        sizes.append(len(batch))
        if len(batch) > 3:
            raise RuntimeError("CUDA out of memory. Tried to allocate 1 GiB")  # what accelerate recognises
        return real_call(self, batch)

    monkeypatch.setattr(runner.Predictor, "__call__", at_most_three)
    summary = run_task(model, processor, get_task("world-vqa"), world("world-vqa", 8), tmp_path, batch_size="auto",
                       progress=False)  # fmt: skip
    assert summary["batch_size"] == 3
    assert len(runner.read_predictions(tmp_path / runner.PREDICTIONS)) == 8
    assert sizes[-3:] == [3, 3, 2]  # after the search: the 8 examples in batches of the size found


def test_local_real_formats(tiny, tmp_path):
    """vl-rewardbench, vqav2 and coco-captions from files written here in their real formats."""
    from explore.data.world_export import export_vlrewardbench
    from explore.world.render import render
    from explore.world.splits import split_scene

    model, processor = tiny
    parquet = export_vlrewardbench(tmp_path / "vlrb", 6)
    s = run_task(model, processor, get_task("vl-rewardbench"), get_task("vl-rewardbench").load(TaskOptions(data=str(parquet))),
                 tmp_path / "out-vlrb", progress=False)  # fmt: skip
    assert s["examples"] == 6

    images = tmp_path / "images"
    images.mkdir()
    for i in (1, 2):
        render(split_scene("test", i)).convert("RGB").save(images / f"COCO_val2014_{i:012d}.jpg")
    questions = {"questions": [{"image_id": i, "question": "What colour is the circle?", "question_id": 10 * i} for i in (1, 2)]}
    annotations = {"annotations": [
        {"question_id": 10 * i, "image_id": i, "question_type": "what color", "answer_type": "other",
         "multiple_choice_answer": "red",
         "answers": [{"answer": a, "answer_confidence": "yes", "answer_id": k + 1} for k, a in enumerate(["red"] * 7 + ["blue"] * 3)]}
        for i in (1, 2)]}  # fmt: skip
    (tmp_path / "q.json").write_text(json.dumps({"data_subtype": "val2014", **questions}))
    (tmp_path / "a.json").write_text(json.dumps(annotations))
    options = TaskOptions(data=str(tmp_path / "q.json"), annotations=str(tmp_path / "a.json"), images=str(images))
    s = run_task(model, processor, get_task("vqav2"), get_task("vqav2").load(options), tmp_path / "out-vqa", progress=False)
    assert s["examples"] == 2 and "vqa_accuracy" in s

    coco = {"images": [{"id": i, "file_name": f"COCO_val2014_{i:012d}.jpg"} for i in (1, 2)],
            "annotations": [{"image_id": i, "caption": f"shapes {k}", "id": 10 * i + k} for i in (1, 2) for k in range(3)]}  # fmt: skip
    (tmp_path / "c.json").write_text(json.dumps(coco))
    options = TaskOptions(data=str(tmp_path / "c.json"), images=str(images))
    s = run_task(model, processor, get_task("coco-captions"), get_task("coco-captions").load(options), tmp_path / "out-coco",
                 progress=False)  # fmt: skip
    assert s["examples"] == 2 and "cider_d" in s


def test_registry_and_errors():
    assert set(TASKS) == {"world-vqa", "world-caption", "world-judge", "vl-rewardbench", "vqav2", "coco-captions", "world-t2i",
                          "world-geneval"}
    with pytest.raises(ExploreError, match="choose one of: world-vqa"):
        get_task("gqa")
    with pytest.raises(ExploreError, match="needs --images"):
        get_task("vqav2").load(TaskOptions(data="q.json", annotations="a.json"))
