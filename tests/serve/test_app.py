"""The app's endpoints through gradio_client against the running server (tests/serve/conftest.py), checked
against the functions they show: the same answers, verdicts, images and sweep rows as called directly."""

import io
import json
import socket
from pathlib import Path

import gradio as gr
import httpx
import numpy as np
import pytest
import torch
from gradio_client import handle_file
from gradio_client.exceptions import AppError
from PIL import Image

from explore.data.example import Example
from explore.diffusion.pipeline import load_pipeline, set_scheduler
from explore.errors import ExploreError
from explore.eval.likelihood import answer_logprobs
from explore.infer import CAPTION_PROMPT
from explore.models.generate import generate_answers
from explore.models.loading import load_model
from explore.serve import ask as ask_tab
from explore.serve import generate as generate_tab
from explore.serve import sweep as sweep_tab
from explore.serve.inputs import MAX_FILE_BYTES, enlarged, world_scene
from explore.serve.models import ModelCache
from explore.world.render import render
from explore.world.splits import split_scene
from explore.world.text import caption

TRIANGLE = "What colour is the triangle?"  # test scene 0 has one triangle, an orange one


def world_png(tmp_path, index=0):
    path = tmp_path / f"scene-{index}.png"
    render(split_scene("test", index, 0), 64).save(path)
    return path


def ask(client, *, source="world scene", upload=None, index=0, task="question", question=TRIANGLE,
        compressed=""):  # fmt: skip
    upload = handle_file(str(upload)) if upload is not None else None
    table, preview, line = client.predict(source, upload, "test", index, 0, task, question, "embedded", compressed,
                                          api_name="/ask")  # fmt: skip
    return table, preview, line


def direct_answer(model_name, image, prompt, max_new_tokens=ask_tab.MAX_NEW_TOKENS["question"]):
    model, processor = load_model(model_name)
    example = Example(id="x", task="vqa", image=image, prompt=prompt)
    return generate_answers(model, processor, [example], max_new_tokens=max_new_tokens)[0]


def test_ask_a_world_scene_side_by_side_with_a_sweep_point(client, tiny_sweep):
    sweep_model = client.predict(str(tiny_sweep), "q8", api_name="/load_point")  # the Tabs output returns nothing
    record = json.loads((tiny_sweep / "results.jsonl").read_text().splitlines()[1])
    assert record["name"] == "q8" and Path(sweep_model) == Path(record["model_dir"]).resolve()
    table, preview, line = ask(client, compressed=sweep_model)
    rows = {row[0]: row for row in table["data"]}
    assert list(rows) == ["original", "compressed"]
    assert rows["original"][2] == "orange"  # the truth of test scene 0
    image = render(split_scene("test", 0, 0), 64)
    assert rows["compressed"][2] == direct_answer(sweep_model, image, TRIANGLE)
    assert rows["compressed"][1] == "q8 (sweep point)" and rows["original"][1] == "embedded"
    for row in rows.values():
        assert row[3] > 0 and row[4] > 0  # latency (ms), load time (s)
    assert "orange triangle" in line  # the scene's caption, as truth
    assert np.array_equal(np.asarray(Image.open(preview).convert("RGB")), np.asarray(enlarged(image)))


def test_another_world_scene_is_a_random_scene_index(client):
    draws = [client.predict(api_name="/ask_another_scene") for _ in range(4)]
    assert all(source == "world scene" and 0 <= index < 10_000 for source, index in draws)
    assert len({index for _, index in draws}) > 1


def test_ask_an_uploaded_image_and_caption_it(client, tmp_path):
    png = world_png(tmp_path)
    table, _, line = ask(client, source="upload", upload=png)
    assert [row[:3] for row in table["data"]] == [["original", "embedded", "orange"]]
    assert "scene-0.png" in line and "64×64" in line
    table, _, _ = ask(client, source="upload", upload=png, task="caption")
    image = Image.open(png).convert("RGB")
    assert table["data"][0][2] == direct_answer("embedded", image, CAPTION_PROMPT, 64)
    assert table["data"][0][2] == caption(split_scene("test", 0, 0))  # the shipped model gets this scene exactly


@pytest.mark.parametrize(
    ("name", "payload", "message"),
    [
        ("notes.png", b"these are notes, not pixels", "is not an image"),
        ("page.png", b"<!doctype html><html><body>404</body></html>", "HTML/XML page"),
        ("empty.png", b"", "empty"),
        ("cut.png", None, "truncated or corrupted"),
        ("bomb.png", "bomb", "decompression bomb"),
    ],
)
def test_bad_uploads_give_a_message_and_the_server_goes_on(client, tmp_path, name, payload, message):
    path = tmp_path / name
    if payload is None:  # a real PNG cut in half
        buffer = io.BytesIO()
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buffer, "PNG")
        payload = buffer.getvalue()[: len(buffer.getvalue()) // 2]
    if payload == "bomb":  # 5 kB on disk, 25 M pixels once decoded
        Image.new("1", (5000, 5000)).save(path)
        assert path.stat().st_size < 50_000
    else:
        path.write_bytes(payload)
    with pytest.raises(AppError, match=message):
        ask(client, source="upload", upload=path)
    with pytest.raises(AppError, match=message):  # the preview shown on upload says the same
        client.predict("upload", handle_file(str(path)), "test", 0, 0, api_name="/preview")
    assert ask(client)[0]["data"][0][2] == "orange"  # nothing crashed


def test_a_file_over_the_upload_limit_is_refused(served, client, tmp_path):
    big = tmp_path / "big.png"
    big.write_bytes(b"\0" * (MAX_FILE_BYTES + 1))
    with pytest.raises(ValueError, match="exceeds the maximum file size"):  # the client reads the limit
        ask(client, source="upload", upload=big)
    with big.open("rb") as file:  # and the server enforces it for any other client
        response = httpx.post(f"{served[0]}gradio_api/upload", files={"files": ("big.png", file, "image/png")})
    assert response.status_code == 413
    assert ask(client)[0]["data"][0][2] == "orange"


def test_user_mistakes_are_one_line_in_the_page(client, tmp_path):
    with pytest.raises(AppError, match="no question"):
        ask(client, question="  ")
    with pytest.raises(AppError, match="no image: upload one"):
        ask(client, source="upload")
    waiting = (None, "upload an image (PNG, JPEG, ...; at most 10mb)")  # "upload" chosen, nothing uploaded yet
    assert client.predict("upload", None, "test", 0, 0, api_name="/preview") == waiting
    with pytest.raises(AppError, match="model folder .* does not exist"):
        ask(client, compressed=str(tmp_path / "missing"))
    with pytest.raises(AppError, match="not in the list of choices"):  # Gradio checks its dropdowns itself
        client.predict("world scene", None, "nope", 0, 0, api_name="/preview")
    with pytest.raises(ExploreError, match="unknown split 'nope'"):  # and so does the page's function
        world_scene("nope", 0, 0)
    with pytest.raises(ExploreError, match="whole number >= 0, got -1"):
        world_scene("test", -1, 0)


def test_judge_shows_both_judges_and_the_official_prompt(client):
    source, query, first, second, line = client.predict("test", 3, 0, api_name="/world_pair")
    assert source == "world scene" and query and first != second
    right = int(line.split("answer ")[1][0])
    summary, samples, prompt = client.predict("world scene", None, "test", 3, 0, query, first, second, "embedded",
                                              3, 0, api_name="/judge")  # fmt: skip
    likelihood, generative = summary["data"]
    model, processor = load_model("embedded")
    example = Example(id="x", task="judge", image=render(split_scene("test", 3, 0), 64), prompt=query,
                      responses=[first, second])  # fmt: skip
    logprobs = answer_logprobs(model, processor, [example, example], [first, second]).tolist()
    assert [float(likelihood[2]), float(likelihood[3])] == pytest.approx(logprobs, abs=1e-3)
    assert likelihood[1] == f"answer {1 + int(logprobs[1] > logprobs[0])} is better"
    assert likelihood[1] == f"answer {right} is better"  # the shipped model picks the faithful answer here
    assert len(samples["data"]) == 3
    votes = [row[1] for row in samples["data"]]
    assert generative[2] == f"{votes.count('answer 1')} votes" and generative[3] == f"{votes.count('answer 2')} votes"
    assert prompt.startswith(" You are a highly capable multimodal AI assistant")
    assert f"Question: {query}\n\nAnswer 1: {first}\n\nAnswer 2: {second}\n" in prompt
    with pytest.raises(AppError, match="empty answer 2"):
        client.predict("world scene", None, "test", 3, 0, query, first, " ", "embedded", 3, 0, api_name="/judge")


def test_generate_draws_what_explore_generate_draws_and_reads_it(client):
    images, layouts, overlays, questions, summary = client.predict(
        "a large red circle at the top left", 2, 5, 2, None, "default", "default", "packaged", "embedded",
        api_name="/generate")  # fmt: skip
    assert len(images) == len(layouts) == len(overlays) == 2
    pipe = set_scheduler(load_pipeline(None), "ddim")  # the packaged model is grounded: layout auto, DDIM, guidance 3
    expected = pipe("a large red circle at the top left", num_inference_steps=2, guidance_scale=3.0,
                    num_images_per_prompt=2, generator=torch.Generator().manual_seed(5), layout="auto",
                    layout_seed=5).images  # fmt: skip
    for shown, image in zip(images, expected):
        assert np.array_equal(np.asarray(Image.open(shown["image"]).convert("RGB")), np.asarray(enlarged(image)))
    assert "a large red circle at the top left" in layouts[0]["caption"]  # the prompt fixes the whole scene
    rows = questions["data"]
    assert {row[0] for row in rows} == {1, 2}
    assert ["count", "How many objects are there?", "1"] == rows[0][1:4]
    assert all(row[6] in ("yes", "no") for row in rows)
    tifa = sum(row[6] == "yes" for row in rows if row[0] == 1) / sum(row[0] == 1 for row in rows)
    assert images[0]["caption"] == f"image 1: TIFA {tifa:.0%}"
    assert "layout auto, ddim 2 steps, guidance 3, seed 5" in summary
    with pytest.raises(AppError, match="grammar|cannot|expected"):
        client.predict("a flying teapot", 1, 0, 2, None, "default", "default", "packaged", "embedded",
                       api_name="/generate")  # fmt: skip
    with pytest.raises(ExploreError, match="no layout input"):  # a free-text pipeline asked for a layout
        generate_tab.resolve_settings(False, "auto", "default", None)


def test_sweep_tab_reads_the_folder(client, tiny_sweep, tmp_path):
    answer, table, plots, notes, point = client.predict(str(tiny_sweep), api_name="/open_sweep")
    assert [row[0] for row in table["data"]] == ["original", "q8"]
    assert table["headers"][:6] == ["point", "compression", "recovery", "VQA acc", "judge acc", "CIDEr-D"]
    results = [json.loads(line) for line in (tiny_sweep / "results.jsonl").read_text().splitlines()]
    assert table["data"][1][3] == f"{results[1]['scores']['world-vqa']:.3f}"
    assert answer == (tiny_sweep / "report.md").read_text().split("## Answer", 1)[1].split("\n## ", 1)[0].strip()
    assert [Path(p["image"]).name for p in plots] == ["pareto_latency.png", "pareto_params.png"] and notes == ""
    assert point["choices"] == [["original", "original"], ["q8", "q8"]] and point["value"] == "q8"
    with pytest.raises(AppError, match="no such folder"):
        client.predict(str(tmp_path / "nothing"), api_name="/open_sweep")
    with pytest.raises(AppError, match="no point 'q9'"):
        client.predict(str(tiny_sweep), "q9", api_name="/load_point")


def test_models_load_once(monkeypatch):
    from explore.serve import models

    calls = []
    monkeypatch.setattr(models, "load_model", lambda name, device: calls.append(name) or object())
    cache = ModelCache()
    first = cache.vlm("embedded")
    assert cache.vlm("embedded") is first and cache.vlm(" embedded ") is first
    assert calls == ["embedded"] and cache.vlm_load_seconds("embedded") >= 0


def test_the_served_cache_holds_each_model_once(served, client):
    ask(client)
    ask(client)
    held = served[1].loaded()
    assert held.count("vlm: embedded") == 1


def test_explore_serve_with_a_bad_model_is_one_line(explore_cli, tmp_path):
    code, _, err = explore_cli("serve", "--model", str(tmp_path / "missing"))
    assert code == 2 and err.count("\n") == 1 and "does not exist" in err


class RecordedProgress(gr.Progress):
    """Gradio's progress object, recording what the handler reports (it is falsy, like the real one)."""

    def __init__(self):
        super().__init__()
        self.descriptions = []

    def __call__(self, progress, desc=None, *args, **kwargs):
        self.descriptions.append(desc)


def test_long_work_reports_progress():
    cache, progress = ModelCache(), RecordedProgress()
    generate_tab.generate(cache, "a red circle", n=1, steps=2, progress=progress)
    assert progress.descriptions == ["loading the diffusion pipeline", "sampling 1 image(s), 2 steps",
                                     "finding objects", "loading the VLM judge embedded",
                                     "asking the prompt's questions"]  # fmt: skip
    progress = RecordedProgress()
    ask_tab.answer(cache, render(split_scene("test", 0, 0), 64), "question", TRIANGLE, "embedded", progress=progress)
    assert progress.descriptions == ["original: loading embedded", "original: answering"]


def test_a_moved_or_unfinished_sweep_folder_is_still_read(tiny_sweep, tmp_path):
    records = [json.loads(line) for line in (tiny_sweep / "results.jsonl").read_text().splitlines()]
    moved = tmp_path / "moved"
    moved.mkdir()
    (moved / "models").symlink_to(tiny_sweep / "models")  # the models came along; the recorded paths are gone
    for record in records:
        record["model_dir"] = "gone/sweep/models/" + Path(record["model_dir"]).name
    # no latency.json: as a sweep killed before its latency pass at the end
    (moved / "results.jsonl").write_text("".join(json.dumps(record) + "\n" for record in records))
    view = sweep_tab.open_sweep(moved)
    assert view.models["q8"] == (moved / "models" / Path(records[1]["model_dir"]).name).resolve()
    assert "min kept" not in view.header and [row[0] for row in view.rows] == ["original", "q8"]
    assert any("no config.yaml" in note for note in view.notes)
    assert any("only the scores are shown" in note for note in view.notes)
    assert sweep_tab.point_model(view, "q8") == view.models["q8"]
    (moved / "models").unlink()
    view = sweep_tab.open_sweep(moved)
    with pytest.raises(ExploreError, match="the model of point 'q8' is not in"):
        sweep_tab.point_model(view, "q8")


def test_explore_serve_on_a_busy_port_is_one_line(explore_cli):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code, _, err = explore_cli("serve", "--port", str(port))
    assert code == 2 and err.count("\n") == 1
    assert f"cannot listen on 127.0.0.1:{port}" in err and "pass another --port" in err
