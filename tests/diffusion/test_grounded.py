"""The grounded generator: the UNet reads the layout map, space-to-depth keeps shapes, the pipeline reloads with
plain ``from_pretrained`` and draws the same images, free text stays available, the cache equals the stream."""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from explore.cli import app, main
from explore.diffusion.build import build_pipeline
from explore.diffusion.cache import CacheSpec, TrainingCache, _build, build_cache
from explore.diffusion.config import load_diffusion_config
from explore.diffusion.data import layout_maps, training_batch
from explore.diffusion.pipeline import SAMPLER_SETTINGS, WorldDiffusionPipeline, load_pipeline, set_scheduler
from explore.diffusion.train import train_diffusion
from explore.diffusion.unet import EfficientUNet
from explore.errors import ExploreError
from explore.world.layout import LAYOUT_CHANNELS, prompt_layout
from explore.world.text import caption

TINY_GROUNDED = Path(__file__).resolve().parents[2] / "configs" / "diffusion" / "tiny-grounded.yaml"
PROMPT = "a red circle above a blue square"


def _unet(**kw):
    torch.manual_seed(0)
    return EfficientUNet(sample_size=64, block_out_channels=(16, 32), attention_levels=(1,), cross_attention_dim=8,
                         attention_heads=2, norm_num_groups=8, **kw).eval()  # fmt: skip


def test_unet_reads_the_layout_and_space_to_depth_keeps_the_shape():
    unet = _unet(layout_channels=LAYOUT_CHANNELS, pixel_unshuffle=2)
    x, context = torch.randn(2, 3, 64, 64), torch.randn(2, 5, 8)
    maps = torch.rand(2, LAYOUT_CHANNELS, 3, 3)
    with torch.no_grad():
        with_map = unet(x, 10, context, layout=maps).sample
        without = unet(x, 10, context).sample
        zeros = unet(x, 10, context, layout=torch.zeros_like(maps)).sample
    assert with_map.shape == (2, 3, 64, 64)
    assert not torch.allclose(with_map, without)
    assert torch.equal(without, zeros)  # no map = the dropped (all-zero) map
    with pytest.raises(ValueError, match="layout must be"):
        unet(x, 10, context, layout=maps[:, :5])
    with pytest.raises(ValueError, match="no layout input"):
        _unet()(x, 10, context, layout=maps)


def test_the_layout_acts_locally():
    """Changing one cell's map changes the output most inside that cell (a 3 × 3 grid of 64 px: ~21 px cells)."""
    unet = _unet(layout_channels=LAYOUT_CHANNELS, pixel_unshuffle=2)
    torch.nn.init.normal_(unet.conv_in.weight, std=0.5)
    x, context = torch.randn(1, 3, 64, 64), torch.randn(1, 5, 8)
    maps = torch.zeros(1, LAYOUT_CHANNELS, 3, 3)
    changed = maps.clone()
    changed[0, :, 2, 2] = 1
    with torch.no_grad():
        diff = (unet(x, 10, context, layout=changed).sample - unet(x, 10, context, layout=maps).sample).abs()
    assert diff[..., 44:, 44:].mean() > 3 * diff[..., :20, :20].mean()


@pytest.fixture(scope="module")
def grounded_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("grounded")
    torch.manual_seed(0)
    build_pipeline(load_diffusion_config(TINY_GROUNDED)).save_pretrained(folder, safe_serialization=True)
    return folder


@pytest.mark.parametrize("sampler", list(SAMPLER_SETTINGS))
def test_plain_from_pretrained_draws_what_explore_draws(grounded_dir, sampler):
    from explore.diffusion.pipeline import load_pipeline

    plain = set_scheduler(WorldDiffusionPipeline.from_pretrained(grounded_dir), sampler)
    plain.set_progress_bar_config(disable=True)
    ours = set_scheduler(load_pipeline(grounded_dir), sampler)
    args = {"num_inference_steps": 3, "num_images_per_prompt": 2, "output_type": "np", "guidance_scale": 2.0}
    a = plain(PROMPT, generator=torch.Generator().manual_seed(1), **args).images
    b = ours(PROMPT, generator=torch.Generator().manual_seed(1), **args).images
    assert a.shape == (2, 64, 64, 3) and np.isfinite(a).all()
    assert np.array_equal(a, b)
    free = ours(PROMPT, generator=torch.Generator().manual_seed(1), layout="none", **args).images
    assert not np.array_equal(a, free)  # the free-text path is another path


def test_auto_layout_is_the_seeded_layout_of_the_prompt(grounded_dir):
    pipe = WorldDiffusionPipeline.from_pretrained(grounded_dir)
    layouts = pipe.layouts_for([PROMPT, PROMPT], "auto", 7)
    assert layouts == [prompt_layout(PROMPT, [7, 0]), prompt_layout(PROMPT, [7, 1])]
    with pytest.raises(ExploreError, match="unknown words 'dog'"):
        pipe.layouts_for(["a dog"], "auto", 0)


def test_with_a_layout_the_text_encoder_reads_the_layouts_caption(grounded_dir, monkeypatch):
    """The grounded path's text is the layout's canonical caption (what training paired with the map), unless
    layout_text="prompt"; the free-text path always reads the prompt."""
    pipe = WorldDiffusionPipeline.from_pretrained(grounded_dir)
    pipe.set_progress_bar_config(disable=True)
    read = []
    encode = pipe.encode_prompts
    monkeypatch.setattr(pipe, "encode_prompts",
                        lambda prompts, device=None: read.append(prompts) or encode(prompts, device))
    prompt = "three green stars"
    scene = prompt_layout(prompt, [3, 0])
    args = {"num_inference_steps": 2, "output_type": "np", "guidance_scale": 2.0}

    def draw(text, **kw):
        return pipe(text, generator=torch.Generator().manual_seed(1), **args, **kw).images

    by_caption = draw(prompt, layout=[scene])
    assert read[-1] == ["", caption(scene)]  # unconditional row, then the caption
    assert caption(scene).count("green star") == 3
    assert np.array_equal(by_caption, draw(caption(scene), layout=[scene], layout_text="prompt"))
    assert not np.array_equal(by_caption, draw(prompt, layout=[scene], layout_text="prompt"))
    assert read[-1] == ["", prompt]
    draw(prompt, layout="none")
    assert read[-1] == ["", prompt]  # no layout: the prompt
    with pytest.raises(ValueError, match="layout_text must be one of"):
        draw(prompt, layout_text="scene")


def test_a_text_only_pipeline_refuses_a_layout(tiny_pipeline_dir):
    pipe = WorldDiffusionPipeline.from_pretrained(tiny_pipeline_dir)
    assert not pipe.grounded
    with pytest.raises(ExploreError, match="--layout none"):
        pipe(PROMPT, num_inference_steps=1, layout="auto")


def test_generate_cli_layout_auto_and_none(grounded_dir, tmp_path):
    def run(*extra):
        args = ["generate", PROMPT, "-n", "2", "--steps", "2", "--checkpoint", str(grounded_dir), *extra]
        return CliRunner().invoke(app, args)

    auto = run("--out", str(tmp_path / "a.png"))
    assert auto.exit_code == 0 and "layout auto" in auto.output, auto.output
    none = run("--out", str(tmp_path / "n.png"), "--layout", "none")
    assert none.exit_code == 0 and "layout none" in none.output, none.output
    assert (tmp_path / "a.png").read_bytes() != (tmp_path / "n.png").read_bytes()
    bad = CliRunner().invoke(app, ["generate", "a purple dog", "--checkpoint", str(grounded_dir), "--out",
                                   str(tmp_path / "d.png")])  # fmt: skip
    assert isinstance(bad.exception, ExploreError) and "'dog'" in str(bad.exception)
    assert not (tmp_path / "d.png").exists()
    as_prompt = run("--out", str(tmp_path / "p.png"), "--layout-text", "prompt")
    assert as_prompt.exit_code == 0, as_prompt.output
    assert (tmp_path / "a.png").read_bytes() != (tmp_path / "p.png").read_bytes()


def test_generate_cli_refuses_an_unknown_layout_text(grounded_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["explore", "generate", PROMPT, "--checkpoint", str(grounded_dir), "--out",
                                      str(tmp_path / "x.png"), "--layout-text", "scene"])  # fmt: skip
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    assert "--layout-text must be caption or prompt, got 'scene'" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()


def test_the_cache_is_the_training_stream_and_resumes(tmp_path):
    spec = CacheSpec(size=5, world_seed=0, max_objects=2, resolution=64, relation_prompts=0.5)
    build_cache(tmp_path / "c", spec, progress=False)
    cache = TrainingCache(tmp_path / "c", spec)
    images, prompts, maps = cache.batch(3, 4)  # wraps: pairs 3, 4, 0, 1
    stream, stream_prompts, scenes = training_batch(3, 2, world_seed=0, max_objects=2, resolution=64,
                                                    relation_prompts=0.5)  # fmt: skip
    assert torch.equal(images[:2], stream) and prompts[:2] == stream_prompts
    assert torch.equal(maps[:2], layout_maps(scenes))
    assert torch.equal(images[2], cache.batch(0, 1)[0][0])
    # an interrupted build (progress says 2 of 5) finishes to the same bytes
    meta = (tmp_path / "c" / "meta.json").read_text()
    before = (tmp_path / "c" / "images.npy").read_bytes()
    (tmp_path / "c" / "meta.json").write_text(meta.replace('"done": 5', '"done": 2'))
    build_cache(tmp_path / "c", spec, progress=False)
    assert (tmp_path / "c" / "images.npy").read_bytes() == before
    assert len((tmp_path / "c" / "prompts.jsonl").read_text().splitlines()) == 5
    with pytest.raises(ExploreError, match="new folder"):
        build_cache(tmp_path / "c", CacheSpec(size=6, world_seed=0, max_objects=2, resolution=64,
                                              relation_prompts=0.5))  # fmt: skip


def test_a_complete_cache_is_only_read(tmp_path):
    # two trainings sharing a cache start side by side: the second must not rewrite what the first is reading
    # (session 34: a rewrite of prompts.jsonl under a reader cut the file at line 38,595 of 50,000)
    spec = CacheSpec(size=3, world_seed=0, max_objects=2, resolution=64, relation_prompts=0.5)
    folder = build_cache(tmp_path / "c", spec, progress=False)
    before = {path.name: (path.stat().st_ino, path.stat().st_mtime_ns, path.read_bytes())
              for path in folder.iterdir()}  # fmt: skip
    build_cache(folder, spec, progress=False)
    assert {path.name: (path.stat().st_ino, path.stat().st_mtime_ns, path.read_bytes())
            for path in folder.iterdir()} == before  # fmt: skip


def test_a_second_build_of_an_unfinished_cache_waits_for_the_first(tmp_path, capsys):
    # two trainings that start side by side on a cache nobody has finished: the second waits on the folder's lock,
    # then finds the cache complete and only reads it (without the lock both wrote the same files)
    import threading
    import time

    from filelock import FileLock

    spec = CacheSpec(size=3, world_seed=0, max_objects=2, resolution=64, relation_prompts=0.5)
    folder = tmp_path / "c"
    folder.mkdir()
    first = FileLock(folder / ".build.lock")  # the first run, building
    first.acquire()
    second = threading.Thread(target=build_cache, args=(folder, spec), kwargs={"progress": False})
    second.start()
    printed = ""
    for _ in range(200):
        printed += capsys.readouterr().out
        if "another run is building it; waiting for it" in printed:
            break
        time.sleep(0.05)
    assert f"training cache {folder}: another run is building it; waiting for it" in printed
    assert second.is_alive() and not (folder / "meta.json").exists()  # nothing written while the first builds
    _build(folder, spec, False)  # the first run's build, under its lock
    written = {path.name: (path.stat().st_ino, path.stat().st_mtime_ns) for path in folder.iterdir()}
    first.release()
    second.join(timeout=30)
    assert not second.is_alive()
    assert {path.name: (path.stat().st_ino, path.stat().st_mtime_ns) for path in folder.iterdir()} == written
    TrainingCache(folder, spec)  # complete and whole


def test_a_cut_prompts_file_is_one_line_naming_the_fix(tmp_path):
    spec = CacheSpec(size=3, world_seed=0, max_objects=2, resolution=64, relation_prompts=0.5)
    folder = build_cache(tmp_path / "c", spec, progress=False)
    prompts = folder / "prompts.jsonl"
    whole = prompts.read_text()
    prompts.write_text(whole[: len(whole) - 10])  # the last line cut mid-string
    with pytest.raises(ExploreError, match=r"prompts.jsonl has 2 whole lines, expected 3; delete .* to rebuild"):
        TrainingCache(folder, spec)
    prompts.write_text("".join(whole.splitlines(keepends=True)[:2]))  # a whole line missing
    with pytest.raises(ExploreError, match="has 2 whole lines, expected 3; delete"):
        TrainingCache(folder, spec)


def test_tiny_grounded_training_runs_and_resumes(tmp_path):
    config = load_diffusion_config(TINY_GROUNDED)
    config = config.model_copy(update={"output_dir": str(tmp_path / "run"),
                                       "data": config.data.model_copy(update={"cache_dir": str(tmp_path / "cache")})})
    folder = train_diffusion(config, progress=False)
    pipe = WorldDiffusionPipeline.from_pretrained(folder)
    assert pipe.grounded and pipe.unet.config.sample_size == 64
    longer = config.model_copy(update={"output_dir": str(tmp_path / "run")})
    assert train_diffusion(longer, resume="latest", progress=False) == folder


def test_a_checkpoint_exports_its_ema_weights_as_the_final_pipeline(tmp_path, monkeypatch, capsys):
    from explore.diffusion.train import export_ema_pipeline

    config = load_diffusion_config(TINY_GROUNDED)
    config = config.model_copy(update={"output_dir": str(tmp_path / "run"),
                                       "data": config.data.model_copy(update={"cache_dir": str(tmp_path / "cache")})})
    final = train_diffusion(config, progress=False)  # the last step is checkpointed too: same EMA weights
    exported = export_ema_pipeline(tmp_path / "run" / "checkpoints" / "step-0000003", tmp_path / "exported")
    a, b = WorldDiffusionPipeline.from_pretrained(final), WorldDiffusionPipeline.from_pretrained(exported)
    for (name, p), q in zip(a.unet.named_parameters(), b.unet.parameters()):
        assert torch.equal(p, q), name
    with pytest.raises(ExploreError, match="not a diffusion training checkpoint"):
        export_ema_pipeline(tmp_path, tmp_path / "x")

    # float16 storage (how the shipped model is kept): half the bytes, loaded back as float32 by the plain
    # diffusers path and by explore's loader alike, which then draw the same images
    result = CliRunner().invoke(app, ["diffusion", "export", str(final), "--out", str(tmp_path / "half"),
                                      "--dtype", "float16"])  # fmt: skip
    assert result.exit_code == 0, result.output
    weights = "unet/diffusion_pytorch_model.safetensors"
    assert (tmp_path / "half" / weights).stat().st_size < 0.6 * (Path(final) / weights).stat().st_size
    plain = WorldDiffusionPipeline.from_pretrained(tmp_path / "half")
    assert {p.dtype for p in plain.unet.parameters()} == {torch.float32}
    for (name, p), q in zip(a.unet.named_parameters(), plain.unet.parameters()):
        assert torch.equal(p.half().float(), q), name
    plain.set_progress_bar_config(disable=True)
    kw = {"num_inference_steps": 2, "output_type": "np"}
    ours = load_pipeline(tmp_path / "half")(PROMPT, generator=torch.Generator().manual_seed(0), **kw).images
    theirs = plain(PROMPT, generator=torch.Generator().manual_seed(0), **kw).images
    assert np.array_equal(ours, theirs)
    # --scheduler stores a sampler (what a plain from_pretrained user gets), with explore's settings for it
    result = CliRunner().invoke(app, ["diffusion", "export", str(final), "--out", str(tmp_path / "ddim"),
                                      "--scheduler", "ddim"])  # fmt: skip
    assert result.exit_code == 0 and "ddim sampler" in result.output, result.output
    stored = WorldDiffusionPipeline.from_pretrained(tmp_path / "ddim")
    expected = set_scheduler(load_pipeline(final), "ddim").scheduler
    assert type(stored.scheduler) is type(expected)
    assert {k: v for k, v in stored.scheduler.config.items() if not k.startswith("_")} == {
        k: v for k, v in expected.config.items() if not k.startswith("_")}
    assert type(set_scheduler(stored, "dpm").scheduler) is type(set_scheduler(load_pipeline(final), "dpm").scheduler)
    result = CliRunner().invoke(app, ["diffusion", "export", str(final), "--out", str(tmp_path / "x"),
                                      "--scheduler", "euler"])  # fmt: skip
    assert result.exit_code == 2 and "--scheduler" in result.output
    # a bad precision is a usage error; a folder that is neither a checkpoint nor a pipeline is one line, exit 2
    result = CliRunner().invoke(app, ["diffusion", "export", str(final), "--out", str(tmp_path / "x"), "--dtype", "int3"])
    assert result.exit_code == 2 and "--dtype" in result.output
    monkeypatch.setattr(sys, "argv", ["explore", "diffusion", "export", str(tmp_path), "--out", str(tmp_path / "x")])
    with pytest.raises(SystemExit) as exit:
        main()
    assert exit.value.code == 2 and "not a diffusion training checkpoint" in capsys.readouterr().err


def test_the_given_channel_tells_an_empty_cell_from_a_dropped_map(tmp_path):
    from explore.diffusion.config import TextSection
    from explore.diffusion.data import with_given_channel
    from explore.diffusion.train import drop_conditions

    config = load_diffusion_config(TINY_GROUNDED)
    config = config.model_copy(update={"model": config.model.model_copy(update={"layout_given_channel": True})})
    pipe = build_pipeline(config)
    assert pipe.unet.config.layout_channels == LAYOUT_CHANNELS + 1
    images = pipe(PROMPT, num_inference_steps=2, output_type="np").images
    assert images.shape == (1, 64, 64, 3)
    maps = with_given_channel(layout_maps([prompt_layout(PROMPT, 0)] * 64))
    prompts, dropped = drop_conditions([PROMPT] * 64, maps, TextSection(cond_dropout=0.3, layout_dropout=0.3),
                                       torch.Generator().manual_seed(0))  # fmt: skip
    given = dropped[:, LAYOUT_CHANNELS].flatten(1)
    assert set(given.mean(1).tolist()) == {0.0, 1.0}  # kept maps say "given" in every cell, dropped ones nowhere
    assert all(g == 0 for g, p in zip(given[:, 0].tolist(), prompts) if p == "")  # no prompt, no map


def test_the_diffusers_baseline_reads_the_layout_as_input_channels(tmp_path):
    """model.kind: diffusers + layout: diffusers' UNet2DConditionModel takes the map concatenated to the sample
    (in_channels = 3 + map channels, as its depth-to-image / inpainting UNets do); it trains, reloads through plain
    from_pretrained with the same images, and the map changes them."""
    from diffusers import UNet2DConditionModel

    config = load_diffusion_config(TINY_GROUNDED)
    config = config.model_copy(update={
        "model": config.model.model_copy(update={"kind": "diffusers", "pixel_unshuffle": 1}),
        "output_dir": str(tmp_path / "run"),
        "data": config.data.model_copy(update={"cache_dir": str(tmp_path / "cache")}),
    })  # fmt: skip
    folder = train_diffusion(config, progress=False)
    plain = WorldDiffusionPipeline.from_pretrained(folder)
    assert isinstance(plain.unet, UNet2DConditionModel) and plain.grounded
    assert (plain.unet.config.in_channels, plain.unet.config.out_channels) == (3 + LAYOUT_CHANNELS, 3)
    plain.set_progress_bar_config(disable=True)
    args = {"num_inference_steps": 2, "output_type": "np", "guidance_scale": 2.0}
    a = plain(PROMPT, generator=torch.Generator().manual_seed(1), **args).images
    b = load_pipeline(folder)(PROMPT, generator=torch.Generator().manual_seed(1), **args).images
    free = plain(PROMPT, generator=torch.Generator().manual_seed(1), layout="none", **args).images
    assert a.shape == (1, 64, 64, 3) and np.array_equal(a, b) and not np.array_equal(a, free)
    with pytest.raises(ValueError, match="pixel_unshuffle needs model.kind: efficient"):
        load_diffusion_config(TINY_GROUNDED).model_validate(
            {**config.model_dump(), "model": {**config.model.model_dump(), "pixel_unshuffle": 2}})


def test_world_t2i_layout_picks_the_path_and_a_folder_keeps_its_path(grounded_dir, tiny_pipeline_dir, tmp_path,
                                                                      monkeypatch, capsys):  # fmt: skip
    """``explore eval --task world-t2i --layout none`` measures the free-text path of a grounded pipeline (the issue's
    own task for it); the path is part of the run's header, so a folder is not resumed on the other path."""

    def run(out, *extra):
        monkeypatch.setattr(sys, "argv", ["explore", "eval", "--task", "world-t2i", "--checkpoint", str(grounded_dir),
                                          "--limit", "2", "--steps", "1", "--batch-size", "2", "--out", str(out),
                                          *extra])  # fmt: skip
        try:
            main()
            code = 0
        except SystemExit as exit_info:  # a failure exits; success may return
            code = exit_info.code or 0
        return code, capsys.readouterr().err

    assert run(tmp_path / "auto")[0] == 0
    assert run(tmp_path / "none", "--layout", "none")[0] == 0
    import json

    assert json.loads((tmp_path / "none" / "summary.json").read_text())["layout"] == "none"
    assert "layout" not in json.loads((tmp_path / "auto" / "summary.json").read_text())  # the pipeline's own path
    images = [sorted((tmp_path / name / "images").glob("*.png")) for name in ("auto", "none")]
    assert len(images[0]) == 2 and [p.read_bytes() for p in images[0]] != [p.read_bytes() for p in images[1]]
    code, err = run(tmp_path / "none", "--layout", "auto")
    assert code == 2 and "layout" in err, err
    code, err = run(tmp_path / "bad", "--layout", "grid")
    assert code == 2 and "--layout must be auto or none, got 'grid'" in err
    monkeypatch.setattr(sys, "argv", ["explore", "eval", "--task", "world-t2i", "--checkpoint", str(tiny_pipeline_dir),
                                      "--limit", "2", "--layout", "auto", "--out", str(tmp_path / "text-only")])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2 and "needs a grounded pipeline" in capsys.readouterr().err
    assert not (tmp_path / "text-only" / "predictions.jsonl").exists()


def test_layout_modulation_reaches_every_block_starts_neutral_and_reloads(tmp_path):
    """model.layout_modulation: the map scales and shifts every residual block (SPADE). Its convolutions start at
    zero (the model starts as the unmodulated one); with the input path closed the map still changes the output,
    locally; the folder reloads through plain from_pretrained with the same output; the config refuses it where it
    cannot act."""
    unet = _unet(layout_channels=LAYOUT_CHANNELS, layout_modulation=True)
    with torch.no_grad():
        unet.conv_in.weight[:, 3:] = 0  # close the input path: only the blocks' modulation can read the map
    x, context = torch.randn(1, 3, 64, 64), torch.randn(1, 5, 8)
    maps = torch.zeros(1, LAYOUT_CHANNELS, 3, 3)
    changed = maps.clone()
    changed[0, :, 2, 2] = 1
    with torch.no_grad():
        assert torch.equal(unet(x, 10, context, layout=changed).sample, unet(x, 10, context, layout=maps).sample)
        modulations = [m.layout for m in unet.modules() if getattr(m, "layout", None) is not None]
        assert len(modulations) == len(unet.down_res) + len(unet.up_res) + 2  # every residual block, middle too
        for conv in modulations:
            torch.nn.init.normal_(conv.weight, std=0.5)
        diff = (unet(x, 10, context, layout=changed).sample - unet(x, 10, context, layout=maps).sample).abs()
    assert diff[..., 44:, 44:].mean() > 3 * diff[..., :20, :20].mean()
    unet.save_pretrained(tmp_path)
    loaded = EfficientUNet.from_pretrained(tmp_path).eval()
    assert loaded.config.layout_modulation
    with torch.no_grad():
        for (name, a), (_, b) in zip(unet.state_dict().items(), loaded.state_dict().items(), strict=True):
            assert torch.equal(a, b), name
        assert torch.allclose(loaded(x, 10, context, layout=changed).sample, unet(x, 10, context, layout=changed).sample,
                              atol=1e-5)
    with pytest.raises(ValueError, match="layout_modulation needs a layout input"):
        _unet(layout_modulation=True)
    config = load_diffusion_config(TINY_GROUNDED)
    for change in ({"layout": False}, {"kind": "diffusers", "pixel_unshuffle": 1}):
        with pytest.raises(ValueError, match="layout_modulation needs model.kind: efficient and model.layout"):
            config.model_validate({**config.model_dump(),
                                   "model": {**config.model.model_dump(), "layout_modulation": True, **change}})


def test_a_layout_modulated_pipeline_trains_and_draws_the_same_through_plain_diffusers(tmp_path):
    from diffusers import DiffusionPipeline

    config = load_diffusion_config(TINY_GROUNDED)
    config = config.model_copy(update={
        "model": config.model.model_copy(update={"layout_modulation": True}),
        "output_dir": str(tmp_path / "run"),
        "data": config.data.model_copy(update={"cache_dir": str(tmp_path / "cache")}),
    })  # fmt: skip
    folder = train_diffusion(config, progress=False)
    plain = DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)
    assert plain.unet.config.layout_modulation
    plain.set_progress_bar_config(disable=True)
    args = {"num_inference_steps": 2, "output_type": "np", "guidance_scale": 2.0}
    a = plain(PROMPT, generator=torch.Generator().manual_seed(1), **args).images
    b = load_pipeline(folder)(PROMPT, generator=torch.Generator().manual_seed(1), **args).images
    assert a.shape == (1, 64, 64, 3) and np.array_equal(a, b)
