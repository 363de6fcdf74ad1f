"""The Gradio page of ``explore serve``: four tabs wired to :mod:`.ask`, :mod:`.judge`, :mod:`.generate` and
:mod:`.sweep`, and :func:`launch`.

Every handler turns an :class:`~explore.errors.ExploreError` (a bad upload, an empty question, a missing
folder, a prompt outside the grammar) into a ``gr.Error``: the page shows the one-line message and the server
goes on. Model work runs one job at a time (one concurrency group, ``models``): two CPU cores gain nothing
from two models computing at once, and the generative judge seeds the global torch generator while it samples.
Every handler is also an API endpoint (``api_name``), which is how the tests call it with ``gradio_client``.
"""

from __future__ import annotations

import functools
import random
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
from PIL import Image

from explore.errors import ExploreError
from explore.serve import ask as ask_tab
from explore.serve import generate as generate_tab
from explore.serve import judge as judge_tab
from explore.serve import sweep as sweep_tab
from explore.serve.inputs import (
    MAX_FILE_SIZE,
    draw_detections,
    enlarged,
    read_upload,
    render_scene,
    scene_text,
    world_scene,
)
from explore.serve.models import PACKAGED_PIPELINE, ModelCache
from explore.world.splits import SPLITS

UPLOAD, WORLD = "upload", "world scene"
MODELS = "models"  # the concurrency group of every handler that runs a model
SCENES_TO_DRAW = 10_000  # "another world scene" picks one of the first this many scenes of the split
# Gradio passes a fresh tracker to a handler whose parameter defaults to a gr.Progress; these only mark it
PROGRESS = gr.Progress()
STEPS_PROGRESS = gr.Progress(track_tqdm=True)  # also follows tqdm bars: the denoising loop's steps
INTRO = """# explore
Ask the original and a compressed model about an image, judge two answers, generate shapes-world images and
read a sweep. Models load on first use and stay loaded; the first click on a tab waits for its model."""


def _page_errors(handler):
    """Show the user's mistakes (ExploreError) in the page as one line; the signature is kept, so Gradio still
    passes ``gr.Progress`` to the handler."""

    @functools.wraps(handler)
    def wrapped(*args, **kwargs):
        try:
            return handler(*args, **kwargs)
        except ExploreError as err:
            raise gr.Error(" ".join(str(err).split()), print_exception=False) from None

    return wrapped


@dataclass
class ImagePicker:
    """The image inputs a tab shares with the others: an upload or a world scene."""

    source: gr.Radio
    upload: gr.File
    split: gr.Dropdown
    index: gr.Number
    seed: gr.Number
    preview: gr.Image
    truth: gr.Markdown

    @property
    def inputs(self) -> list:
        return [self.source, self.upload, self.split, self.index, self.seed]


def image_picker(prefix: str) -> ImagePicker:
    source = gr.Radio([WORLD, UPLOAD], value=WORLD, label="image", elem_id=f"{prefix}-source")
    upload = gr.File(label=f"upload an image (at most {MAX_FILE_SIZE})", type="filepath", file_types=["image"],
                     elem_id=f"{prefix}-upload")  # fmt: skip
    with gr.Row():
        split = gr.Dropdown(list(SPLITS), value="test", label="world split", elem_id=f"{prefix}-split")
        index = gr.Number(0, precision=0, minimum=0, label="scene", elem_id=f"{prefix}-index")
        seed = gr.Number(0, precision=0, minimum=0, label="world seed", elem_id=f"{prefix}-seed")
    another = gr.Button("another world scene", size="sm", elem_id=f"{prefix}-another")
    preview = gr.Image(label="the image", type="pil", format="png", interactive=False, height=256,
                       elem_id=f"{prefix}-preview")  # fmt: skip
    truth = gr.Markdown(elem_id=f"{prefix}-truth")
    picker = ImagePicker(source, upload, split, index, seed, preview, truth)
    another.click(another_scene, None, [source, index], api_name=f"{prefix}_another_scene",
                  api_visibility="public" if prefix == "ask" else "private")  # fmt: skip
    return picker


def another_scene() -> tuple[str, int]:
    """A world scene drawn at random (its index in the split; the split's scenes are themselves sampled)."""
    return WORLD, random.randrange(SCENES_TO_DRAW)


def picked_image(source: str, upload: str | None, split: str, index: float, seed: float,
                 resolution: int = 64) -> tuple[Image.Image, str]:  # fmt: skip
    """The chosen image (an upload decoded safely, or a world scene rendered at ``resolution``) and a line about
    it (a world scene's truth as its caption)."""
    if source == UPLOAD:
        image = read_upload(upload)
        return image, f"uploaded {Path(upload).name}: {image.size[0]}×{image.size[1]} px"
    if source != WORLD:
        raise ExploreError(f"unknown image source {source!r}; choose {WORLD} or {UPLOAD}")
    scene = world_scene(split, index, seed)
    return render_scene(scene, resolution), f"scene {int(index)} of {split}: *{scene_text(scene)}*"


def _model_label(name: str) -> str:
    """How the answers table names a model: a sweep point by its name, a folder by its last part."""
    point = sweep_tab.point_name(name) if name != "embedded" and Path(name).expanduser().is_dir() else None
    if point is not None:
        return f"{point} (sweep point)"
    return Path(name).name if Path(name).expanduser().is_dir() else name


def _show(image: Image.Image) -> Image.Image:
    return enlarged(image) if max(image.size) < 256 else image


def build_app(cache: ModelCache | None = None, *, original: str = "embedded", pipeline: str | None = None,
              judge_model: str | None = None) -> gr.Blocks:  # fmt: skip
    """The page. ``original``: the model the Ask and Judge tabs start with; ``pipeline``: the diffusion folder
    the Generate tab starts with (None: the packaged one); ``judge_model``: the VLM that answers the generated
    images' questions (default: ``original``). Models come from ``cache`` (a new one by default)."""
    cache = cache or ModelCache()
    judge_model = judge_model or original

    # ---- handlers (each is an API endpoint too) ----

    @_page_errors
    def preview(source, upload, split, index, seed):
        if source == UPLOAD and not upload:  # "upload" chosen, nothing uploaded yet: not a mistake
            return None, f"upload an image (PNG, JPEG, ...; at most {MAX_FILE_SIZE})"
        image, line = picked_image(source, upload, split, index, seed)
        return _show(image), line

    @_page_errors
    def ask(source, upload, split, index, seed, task, question, original_model, compressed,
            progress=PROGRESS):  # fmt: skip
        resolution = 64
        if source == WORLD:  # render the scene at the size the original model reads
            progress(0, desc=f"loading {original_model}")
            resolution = ask_tab.model_resolution(cache, original_model)
        image, line = picked_image(source, upload, split, index, seed, resolution)
        answers = ask_tab.answer(cache, image, task, question, original_model, compressed, progress=progress)
        rows = [[a.role, _model_label(a.model), a.answer, round(a.latency_ms, 1), round(a.load_seconds, 2)]
                for a in answers]  # fmt: skip
        return rows, _show(image), line

    @_page_errors
    def world_pair(split, index, seed):
        example = judge_tab.world_pair(split, index, seed)
        right = example.preferred + 1
        return (WORLD, example.prompt, example.responses[0], example.responses[1],
                f"world judge pair ({example.category}): answer {right} is the faithful one")  # fmt: skip

    @_page_errors
    def judge(source, upload, split, index, seed, query, first, second, model, samples, judge_seed,
              progress=PROGRESS):  # fmt: skip
        resolution = ask_tab.model_resolution(cache, model) if source == WORLD else 64
        image, _ = picked_image(source, upload, split, index, seed, resolution)
        verdicts = judge_tab.judge(cache, model, image, query, first, second, samples=samples, seed=judge_seed,
                                   progress=progress)  # fmt: skip
        votes = [verdicts.votes.count(1), verdicts.votes.count(2), verdicts.votes.count(None)]
        generative = ("no verdict (no sample parsed)" if verdicts.generative_choice is None
                      else f"answer {verdicts.generative_choice} is better")  # fmt: skip
        summary = [
            ["likelihood", f"answer {verdicts.likelihood_choice} is better",
             f"{verdicts.logprobs[0]:.3f}", f"{verdicts.logprobs[1]:.3f}", ""],
            ["generative (official prompt)", generative, f"{votes[0]} votes", f"{votes[1]} votes",
             f"{votes[2]} unparsed"],
        ]  # fmt: skip
        samples_rows = [[i + 1, "unparsed" if vote is None else f"answer {vote}", text]
                        for i, (vote, text) in enumerate(zip(verdicts.votes, verdicts.samples))]  # fmt: skip
        return summary, samples_rows, verdicts.official_prompt

    @_page_errors
    def generate(prompt, n, seed, steps, guidance, sampler, layout, pipeline_folder, vlm,
                 progress=STEPS_PROGRESS):
        guidance = guidance or None  # 0 (or an empty box): the pipeline's default
        made = generate_tab.generate(cache, prompt, n=n, seed=seed, steps=steps, guidance=guidance, sampler=sampler,
                                     layout=layout, pipeline=pipeline_folder, judge_model=vlm,
                                     progress=progress)  # fmt: skip
        images, layouts, overlays = [], [], []
        for i, (image, scene, found) in enumerate(zip(made.images, made.layouts, made.detections), start=1):
            tifa = made.tifa(i)
            images.append((enlarged(image), f"image {i}: TIFA {tifa:.0%}" if tifa is not None else f"image {i}"))
            used = "layout used" if made.grounded else "sampled for the questions (free text: no layout given)"
            layouts.append((enlarged(render_scene(scene, 64)), f"{i}, {used}: {generate_tab.layout_caption(scene)}"))
            names = ", ".join(f"{d.size} {d.colour} {d.shape}" for d in found) or "nothing"
            overlays.append((draw_detections(image, found), f"{i}: found {names}"))
        rows = [[row.image, row.qtype, row.question, row.expected, row.vlm, row.detector,
                 "yes" if row.vlm_right else "no"] for row in made.questions]  # fmt: skip
        s = made.settings
        summary = (f"{len(made.images)} image(s), layout {s['layout']}, {s['sampler']} {s['steps']} steps, "
                   f"guidance {s['guidance']:g}, seed {s['seed']}"
                   + f"; the pipeline loaded once, in {made.load_seconds:.1f} s")
        if not made.grounded:
            summary += (". Free text: the questions ask about a layout sampled from the prompt, so cells, colours "
                        "or sizes the prompt leaves open may differ from what was drawn.")  # fmt: skip
        return images, layouts, overlays, rows, summary

    @_page_errors
    def open_sweep(folder):
        view = sweep_tab.open_sweep(folder)
        notes = "\n".join(f"- {note}" for note in view.notes)
        table = {"headers": view.header, "data": view.rows}
        points = list(view.models)
        compressed = [name for name in points if name != "original" and view.models[name] is not None]
        choice = gr.Dropdown(choices=points, value=(compressed or points)[0])
        return view.answer, table, [str(p) for p in view.plots], notes, choice

    @_page_errors
    def load_point(folder, point):
        model = sweep_tab.point_model(sweep_tab.open_sweep(folder), point)
        return str(model), gr.Tabs(selected="ask")

    # ---- the page ----

    with gr.Blocks(title="explore", analytics_enabled=False, delete_cache=(3600, 86400)) as app:
        gr.Markdown(INTRO)
        with gr.Tabs(selected="ask") as tabs:
            with gr.Tab("Ask", id="ask"), gr.Row():
                with gr.Column():
                    picker = image_picker("ask")
                with gr.Column():
                    task = gr.Radio(list(ask_tab.TASKS), value="question", label="task", elem_id="ask-task")
                    question = gr.Textbox("What colour is the triangle?", label="question",
                                          elem_id="ask-question")  # fmt: skip
                    original_box = gr.Textbox(original, label="original model ('embedded', a folder or a Hub id)",
                                              elem_id="ask-original")  # fmt: skip
                    compressed_box = gr.Textbox("", label="compressed model: a folder, or a sweep point loaded "
                                                "from the Sweep tab (empty: the original only)",
                                                elem_id="ask-compressed")  # fmt: skip
                    ask_button = gr.Button("Ask", variant="primary", elem_id="ask-button")
                    answers = gr.Dataframe(headers=["model", "name", "answer", "latency (ms)", "load, once (s)"],
                                           column_widths=["14%", "26%", "30%", "15%", "15%"], interactive=False,
                                           wrap=True, elem_id="ask-answers")  # fmt: skip
            with gr.Tab("Judge", id="judge"):
                with gr.Row():
                    with gr.Column():
                        judge_picker = image_picker("judge")
                        pair_button = gr.Button("Use the world's judge pair for this scene", elem_id="judge-pair")
                    with gr.Column():
                        default_pair = judge_tab.world_pair("test", 0, 0)
                        query = gr.Textbox(default_pair.prompt, label="query", elem_id="judge-query")
                        first = gr.Textbox(default_pair.responses[0], label="answer 1", elem_id="judge-answer-1")
                        second = gr.Textbox(default_pair.responses[1], label="answer 2", elem_id="judge-answer-2")
                        with gr.Row():
                            judge_box = gr.Textbox(original, label="judge model", elem_id="judge-model")
                            samples = gr.Number(10, precision=0, minimum=1, maximum=50,
                                                label="generative samples (official: 10)")  # fmt: skip
                            judge_seed = gr.Number(0, precision=0, minimum=0, label="sampling seed")
                        judge_button = gr.Button("Judge", variant="primary", elem_id="judge-button")
                        verdicts = gr.Dataframe(headers=["judge", "verdict", "answer 1", "answer 2", ""],
                                                interactive=False, wrap=True, elem_id="judge-verdicts")  # fmt: skip
                with gr.Accordion("the official prompt (VL-RewardBench) and the generative judge's samples"):
                    prompt_box = gr.Textbox(label="official judge prompt, answer 1 first (each sample draws its "
                                            "own order, as the official code does)", lines=12, interactive=False,
                                            elem_id="judge-prompt")  # fmt: skip
                    sample_table = gr.Dataframe(headers=["sample", "vote (page order)", "judgment"], wrap=True,
                                                interactive=False, elem_id="judge-samples")  # fmt: skip
            with gr.Tab("Generate", id="generate"):
                with gr.Row():
                    with gr.Column(scale=1):
                        prompt = gr.Textbox("a large red circle at the top left and a small blue square at the "
                                            "bottom right", label="prompt", lines=2, elem_id="generate-prompt")
                        with gr.Row():
                            n_images = gr.Slider(1, generate_tab.MAX_IMAGES, value=4, step=1, label="images")
                            gen_seed = gr.Number(0, precision=0, minimum=0, label="seed", elem_id="generate-seed")
                        with gr.Row():
                            steps = gr.Slider(1, generate_tab.MAX_STEPS, value=20, step=1, label="steps",
                                              elem_id="generate-steps")  # fmt: skip
                            guidance = gr.Number(0, minimum=0, label="guidance (1 = off; 0: the default, 2 with a "
                                                 "layout, 3 without)")  # fmt: skip
                        with gr.Row():
                            sampler = gr.Dropdown([generate_tab.DEFAULT, "ddim", "dpm", "ddpm", "unipc"],
                                                  value=generate_tab.DEFAULT, label="sampler")  # fmt: skip
                            layout = gr.Dropdown([generate_tab.DEFAULT, "auto", "none"], value=generate_tab.DEFAULT,
                                                 label="layout (auto: from the prompt, grounded pipelines)")  # fmt: skip
                        pipeline_box = gr.Textbox(pipeline or PACKAGED_PIPELINE, label="diffusion pipeline folder")
                        vlm_box = gr.Textbox(judge_model, label="VLM judge for the questions")
                        generate_button = gr.Button("Generate", variant="primary", elem_id="generate-button")
                        generate_summary = gr.Markdown(elem_id="generate-summary")
                    with gr.Column(scale=2):
                        gallery = gr.Gallery(label="images", columns=4, height=300, format="png", elem_id="generate-images")
                        layout_gallery = gr.Gallery(label="layouts", columns=4, height=300, format="png",
                                                    elem_id="generate-layouts")  # fmt: skip
                        detection_gallery = gr.Gallery(label="objects the detector found", columns=4, height=300, format="png",
                                                       elem_id="generate-detections")  # fmt: skip
                questions = gr.Dataframe(headers=["image", "type", "question", "prompt says", "VLM", "detector",
                                                  "VLM right"], interactive=False, wrap=True,
                                         elem_id="generate-questions")  # fmt: skip
            with gr.Tab("Sweep", id="sweep"):
                with gr.Row():
                    folder = gr.Textbox("runs/sweep-default", label="sweep folder (an `explore sweep` output_dir)",
                                        scale=4, elem_id="sweep-folder")  # fmt: skip
                    open_button = gr.Button("Open", variant="primary", scale=1, elem_id="sweep-open")
                sweep_answer = gr.Markdown(elem_id="sweep-answer")
                sweep_notes = gr.Markdown()
                sweep_table = gr.Dataframe(interactive=False, wrap=True, elem_id="sweep-table")
                plots = gr.Gallery(label="Pareto plots", columns=2, height=460, object_fit="contain", elem_id="sweep-plots")
                with gr.Row():
                    point = gr.Dropdown([], label="point", elem_id="sweep-point", allow_custom_value=True)
                    load_button = gr.Button("Load into Ask (as the compressed model)", elem_id="sweep-load")

        # ---- events ----
        for picked in (picker, judge_picker):  # the image shown follows every change of its inputs
            gr.on([component.change for component in picked.inputs], preview, picked.inputs,
                  [picked.preview, picked.truth], show_progress="hidden",
                  api_name="preview" if picked is picker else f"{judge_picker.source.elem_id}-preview",
                  api_visibility="public" if picked is picker else "private")  # fmt: skip
            app.load(preview, picked.inputs, [picked.preview, picked.truth], api_visibility="private")
        ask_button.click(ask, [*picker.inputs, task, question, original_box, compressed_box],
                         [answers, picker.preview, picker.truth], api_name="ask", concurrency_id=MODELS)  # fmt: skip
        pair_button.click(world_pair, [judge_picker.split, judge_picker.index, judge_picker.seed],
                          [judge_picker.source, query, first, second, judge_picker.truth], api_name="world_pair")
        judge_button.click(judge, [*judge_picker.inputs, query, first, second, judge_box, samples, judge_seed],
                           [verdicts, sample_table, prompt_box], api_name="judge", concurrency_id=MODELS)
        generate_button.click(generate, [prompt, n_images, gen_seed, steps, guidance, sampler, layout, pipeline_box,
                                         vlm_box],
                              [gallery, layout_gallery, detection_gallery, questions, generate_summary],
                              api_name="generate", concurrency_id=MODELS)  # fmt: skip
        open_button.click(open_sweep, [folder], [sweep_answer, sweep_table, plots, sweep_notes, point],
                          api_name="open_sweep")  # fmt: skip
        load_button.click(load_point, [folder, point], [compressed_box, tabs], api_name="load_point")
    return app


def launch(app: gr.Blocks, *, host: str = "127.0.0.1", port: int | None = None, share: bool = False,
           block: bool = True, quiet: bool = False) -> str:  # fmt: skip
    """Serve ``app`` on ``host:port`` (port None: Gradio's first free one from 7860) with the upload limit
    :data:`~explore.serve.inputs.MAX_FILE_SIZE`; ``share`` asks Gradio for a public link (off by default).
    ``block=False`` returns once the server is up (tests); returns the local URL."""
    app.queue(default_concurrency_limit=1)
    app.launch(server_name=host, server_port=port, share=share, max_file_size=MAX_FILE_SIZE, show_error=True,
               prevent_thread_lock=not block, quiet=quiet)  # fmt: skip
    return app.local_url
