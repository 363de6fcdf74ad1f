"""Text-to-image side by side, in one run on this machine's CPU:

1. UNets: explore's EfficientUNet (depthwise-separable and plain 3x3 blocks) against diffusers'
   UNet2DConditionModel at the same widths: parameters, CPU latency per generated image (20 DPM-Solver++
   steps with guidance, batch 1) and per training step (batch 32, forward + backward); with trained
   checkpoints (--checkpoint, --baseline-checkpoint) also their exact faithfulness at 20 steps.
2. Samplers (needs --checkpoint): DDPM 1000 steps against DDIM and DPM-Solver++ at 50 / 20 / 10 steps:
   exact faithfulness (GenEval-style detector checks) and latency per image; --judge adds the VLM
   judge (TIFA) score. The detector on the real renders is the upper bound.

3. Grounded pipelines (--geneval FOLDER, a pipeline with a layout input): world-geneval (seen pairs) of
   the grounded path against the free-text path of the same weights, every sampler at 20 steps and
   guidance 1.5 / 2 / 3 (the calibration model diverged under DPM-Solver++: test every sampler).

    python benchmarks/diffusion.py --checkpoint runs/diffusion/shapes-small/pipeline \\
        --baseline-checkpoint runs/diffusion/shapes-small-baseline/pipeline --prompts 64 --judge
    python benchmarks/diffusion.py --geneval runs/diffusion/grounded/pipeline --geneval-prompts 4

4. The efficient UNet against diffusers' UNet2DConditionModel trained on the same budget (--compare EFFICIENT
   BASELINE: two grounded pipelines from the same config but model.kind, e.g. configs/diffusion/latent.yaml and
   latent-baseline.yaml): world-geneval, seen and held-out pairs, and seconds per image (batch 1 and batch 16), in
   one run; --compare-guidance adds guidance scales (1 = one UNet pass per step, what a model trained with
   loss.model_guidance samples at), --compare-samplers samplers (DDIM by default); every row of the second pipeline
   gets the fastest row of the first (any sampler) that is at least as faithful on both pair sets, and the ratio.

    python benchmarks/diffusion.py --compare runs/diffusion/latent/pipeline runs/diffusion/latent-baseline/pipeline
    python benchmarks/diffusion.py --compare EFFICIENT BASELINE --compare-steps 10 14 20   # both speed / quality curves
    python benchmarks/diffusion.py --compare EFFICIENT BASELINE --compare-guidance 1 3 --compare-names A B
    python benchmarks/diffusion.py --compare EFFICIENT BASELINE --compare-guidance 1 --compare-compile  # compiled timings
    python benchmarks/diffusion.py --compare EFFICIENT BASELINE --compare-guidance 1 --compare-samplers ddim dpm unipc
    # the evaluations ahead, two processes, then the timing alone (reads them), each UNet in its faster memory format:
    python benchmarks/diffusion.py --compare EFFICIENT BASELINE --compare-guidance 1 --compare-out DIR --compare-only 0 &
    python benchmarks/diffusion.py --compare EFFICIENT BASELINE --compare-guidance 1 --compare-out DIR --compare-only 1
    python benchmarks/diffusion.py --compare EFFICIENT BASELINE --compare-guidance 1 --compare-out DIR --compare-compile \
        --compare-channels-last

5. The autoencoder's bound on a latent generator (--autoencoder-ceiling FOLDER): world-geneval of the real
   renders after an encode-decode round trip.

    python benchmarks/diffusion.py --autoencoder-ceiling runs/diffusion/autoencoder/autoencoder --geneval-prompts 10

6. Decoders (--decoders PIPELINE ...: latent pipelines, e.g. one exported with another autoencoder by `explore
   diffusion export --vae`): the autoencoder's decoder alone (ms / image, batch 1 and 16) and a whole sample (s /
   image, DDIM --decoders-steps at the folder's guidance, batch 1), interleaved rounds, the best of each.

    OMP_NUM_THREADS=1 python benchmarks/diffusion.py --decoders src/explore/embedded/diffusion-small \
        runs/diffusion/shipped-tiny-vae

7. Training budgets (--budget CONFIG ...: training recipes, e.g. the two of a --compare): each recipe's real training
   loop (`explore diffusion train`: data, text encoder, model guidance, optimizer, EMA) for --budget-steps steps, all
   started together, one process and one thread each, as the budget runs train two at a time; steps / s of each and,
   with --budget-reference STEPS, the steps each recipe gets in the first recipe's wall-clock for STEPS of its own.

    python benchmarks/diffusion.py --budget configs/diffusion/budget-baseline-mg-lr4-shipped-vae.yaml \
        configs/diffusion/budget-efficient-mg-spade-lr4-2250-shipped-vae.yaml --budget-steps 100 --budget-reference 1230
    # both through torch.compile (train.compile): the steady rate and the one-time start-up are printed apart
    python benchmarks/diffusion.py --budget BASELINE.yaml EFFICIENT.yaml --budget-steps 240 --budget-reference 1640 \
        --budget-compile

8. Few-step timestep spacing (--spacing PIPELINE ...: latent grounded pipelines): world-geneval (seen and held-out)
   at --spacing-steps DPM-Solver++ steps with the folder's own spacing (explore's "leading" for a noise-predicting
   model: the first step one stride below the last training step; "trailing" for a velocity one: at it) against
   steps spread evenly from each --spacing-start timestep (diffusers' "linspace" spacing with lambda_min_clipped at
   that timestep: the first step at it; at 4 steps a start of 800 is "leading"'s), and UniPC.

    OMP_NUM_THREADS=1 python benchmarks/diffusion.py --spacing runs/diffusion/budget-efficient-mg-spade-lr3-2950-tiny-vae \
        runs/diffusion/budget-baseline-mg-lr4-1640-tiny-vae --spacing-start 950 900 850 --spacing-steps 4 --geneval-prompts 25

9. Denormal floats (--denormals PIPELINE ...): each pipeline's UNet, trained and an untrained twin of the same
   config, forward + backward at --denormals-batch on random latents, text states and layouts (a training step's
   model cost), with denormals flushed to zero (train.flush_denormal) and not, interleaved rounds, the best of each.

    OMP_NUM_THREADS=1 python benchmarks/diffusion.py --denormals runs/diffusion/budget-efficient-mg-spade-lr2-b32-5160-tiny-vae \
        runs/diffusion/budget-baseline-mg-lr2-b32-3280-tiny-vae

Not a test; prints tables with ratios.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from explore.diffusion.build import build_pipeline
from explore.diffusion.config import load_diffusion_config
from explore.diffusion.pipeline import load_pipeline, set_scheduler
from explore.diffusion.unet import layout_channels, predict_noise
from explore.eval.t2i import t2i_examples, tifa_score
from explore.world.detect import calibrated_classifier, check_scene, detect
from explore.world.scene import GRID, Scene

SAMPLERS = [("ddpm", 1000), ("ddim", 50), ("ddim", 20), ("ddim", 10), ("dpm", 50), ("dpm", 20), ("dpm", 10)]


def _variant(config, **model):
    return config.model_copy(update={"model": config.model.model_copy(update=model)})


THROUGHPUT_BATCH = 16  # images per call for the throughput column of --compare (world-geneval samples at 16)


def latency_per_image(pipe, steps: int = 20, repeats: int = 3, scheduler: str = "dpm", guidance: float = 3.0,
                      batch: int = 1) -> float:  # fmt: skip
    """Best-of-``repeats`` seconds per image to generate ``batch`` images in one call (``steps`` steps of
    ``scheduler``, at ``guidance``): batch 1 is the latency of one image, a larger batch the throughput."""
    set_scheduler(pipe, scheduler)
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        pipe("a large red circle at the top left", num_inference_steps=steps, guidance_scale=guidance,
             num_images_per_prompt=batch, generator=torch.Generator().manual_seed(0))  # fmt: skip
        best = min(best, (time.perf_counter() - started) / batch)
    return best


def train_step_seconds(pipe, batch: int = 32, repeats: int = 3) -> float:
    """Best-of-``repeats`` seconds of one forward + backward of the UNet (no perceptual term; on latents for a
    latent model, with a layout map for a grounded one)."""
    unet = pipe.unet.train()
    g = torch.Generator().manual_seed(0)
    side, channels = unet.config.sample_size, unet.config.out_channels
    sample = torch.randn(batch, channels, side, side, generator=g)
    width = pipe.text_encoder.config.hidden_size if hasattr(pipe.text_encoder.config, "hidden_size") else 160
    context, mask = torch.randn(batch, 24, width, generator=g), torch.ones(batch, 24, dtype=torch.long)
    maps = torch.rand(batch, layout_channels(unet), GRID, GRID, generator=g) if pipe.grounded else None
    t = torch.randint(0, 1000, (batch,), generator=g)
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        predict_noise(unet, sample, t, context, mask, maps).pow(2).mean().backward()
        best = min(best, time.perf_counter() - started)
    unet.zero_grad(set_to_none=True)
    unet.eval()
    return best


def faithfulness(pipe, examples, scheduler: str, steps: int, vlm=None, processor=None, batch: int = 16) -> dict:
    """Exact checks (and the VLM-judge TIFA score) of images generated for ``examples``; seconds per image."""
    set_scheduler(pipe, scheduler)
    classifier = calibrated_classifier(pipe.image_size)
    images, started = [], time.perf_counter()
    for start in range(0, len(examples), batch):
        chunk = examples[start : start + batch]
        generators = [torch.Generator().manual_seed(int(e.meta["seed"])) for e in chunk]
        images += pipe(
            [e.prompt for e in chunk], num_inference_steps=steps, guidance_scale=3.0, generator=generators
        ).images
    seconds = (time.perf_counter() - started) / len(examples)
    scenes = [Scene.from_dict(e.meta["scene"]) for e in examples]
    checks = [check_scene(detect(image, classifier), scene) for image, scene in zip(images, scenes)]
    result = {"object": np.mean([c["object"] for c in checks]), "exact": np.mean([c["exact"] for c in checks]),
              "s_per_image": seconds}  # fmt: skip
    if vlm is not None:
        result["tifa"] = float(
            np.mean([tifa_score(vlm, processor, image, scene) for image, scene in zip(images, scenes)])
        )
    return result


def real_upper_bound(examples, vlm=None, processor=None) -> dict:
    scenes = [Scene.from_dict(e.meta["scene"]) for e in examples]
    images = [e.load_image() for e in examples]
    checks = [check_scene(detect(image), scene) for image, scene in zip(images, scenes)]
    result = {"object": np.mean([c["object"] for c in checks]), "exact": np.mean([c["exact"] for c in checks])}
    if vlm is not None:
        result["tifa"] = float(
            np.mean([tifa_score(vlm, processor, image, scene) for image, scene in zip(images, scenes)])
        )
    return result


def geneval_row(pipe, examples, out: Path, *, layout: str, scheduler: str, guidance: float, seed: int) -> dict:
    """world-geneval (seen pairs) of one setting, and seconds per image."""
    from explore.eval.geneval import evaluate_geneval

    started = time.perf_counter()
    summary = evaluate_geneval(set_scheduler(pipe, scheduler), examples, out, layout=layout, seed=seed, steps=20,
                               guidance=guidance, progress=False)  # fmt: skip
    seen = summary["seen"]["generated"]
    return {**seen, "s_per_image": (time.perf_counter() - started) / summary["images"]}


def geneval_tables(folder: Path, prompts: int, seed: int) -> None:
    """Grounded vs free text, samplers and guidance scales on world-geneval, side by side."""
    import tempfile

    from explore.eval.geneval import CATEGORIES, geneval_examples

    pipe = load_pipeline(folder)
    examples = [e for e in geneval_examples(prompts, seed) if e.meta["set"] == "seen"]
    settings = [("auto", "ddim", 2.0), ("none", "ddim", 2.0), ("none", "dpm", 3.0), ("auto", "ddpm", 2.0),
                ("auto", "dpm", 2.0), ("auto", "unipc", 2.0), ("auto", "ddim", 1.5), ("auto", "ddim", 3.0)]  # fmt: skip
    print(f"## world-geneval of {folder}, seen pairs, {prompts} prompts per category x 4 images, 20 steps\n")
    names = ["layout", "sampler", "guidance", "overall", *CATEGORIES, "scene objects", "exact", "s / image"]
    header = " | ".join(names)
    print(f"| {header} |")
    print("|---|---|---:|---:|" + "---:|" * len(CATEGORIES) + "---:|---:|---:|")
    with tempfile.TemporaryDirectory() as scratch:
        for index, (layout, scheduler, guidance) in enumerate(settings):
            r = geneval_row(pipe, examples, Path(scratch) / str(index), layout=layout, scheduler=scheduler,
                            guidance=guidance, seed=seed)  # fmt: skip
            cells = " | ".join(f"{r[c]:.2f}" for c in CATEGORIES)
            print(f"| {layout} | {scheduler} | {guidance} | {r['overall']:.3f} | {cells} | "
                  f"{r['full_scene_objects']:.2f} | {r['full_scene_exact']:.2f} | {r['s_per_image']:.3f} |", flush=True)


def compare_geneval(efficient: Path, baseline: Path, prompts: int, seed: int, steps: tuple[int, ...] = (20,),
                    guidances: tuple[float, ...] = (3.0,),
                    names: tuple[str, str] = ("efficient", "diffusers UNet2DConditionModel"),
                    compiled: bool = False, samplers: tuple[str, ...] = ("ddim",),
                    out: Path | None = None, only: int | None = None,
                    channels_last: bool = False) -> None:  # fmt: skip
    """The issue's comparison: the efficient UNet against diffusers' UNet2DConditionModel trained on the same
    budget (same config but model.kind), world-geneval (grounded, seen and held-out pairs) and seconds per
    image, measured in one run, interleaved so that load on the machine hits both alike; one row per UNet,
    sampler, guidance scale and sampling-step count, so that faithfulness can be compared at equal seconds (the
    speed / quality curve of each), not only at one setting; each baseline row is matched by the fastest efficient
    row of any sampler. Guidance 1 is one UNet pass per step (no CFG), above 1 two (a model trained with
    loss.model_guidance samples at 1). Both UNets get every setting. ``compiled``: the latency
    pass runs both pipelines with their UNet, text encoder and autoencoder decoder through ``torch.compile`` (static
    shapes, each shape compiled before it is timed) after the eager pass, both printed; faithfulness is measured eager.
    ``out``: keep each evaluation's images and predictions in ``out/<pipeline index>-<sampler>-<guidance>-<steps>``
    (0: the efficient pipeline, 1: the baseline) instead of a temporary folder; a re-run resumes them (a folder of
    another pipeline or setting is refused by world-geneval's header check), so they can be computed ahead, apart
    from the timing; the timing run writes every measured second there too (``timings.json``: the table rounds).
    ``only`` (0 or 1, with ``out``): evaluate that pipeline alone into ``out`` and stop (no timing, no table), so the
    two evaluations run as two processes before the timing run, which then only reads them.
    ``channels_last``: also time both pipelines with their UNet in channels-last memory format (diffusers'
    documented CPU/GPU speed-up, ``unet.to(memory_format=torch.channels_last)``), and match rows on each UNet's
    faster format of the two, measured, so that neither UNet is timed in a layout that slows it."""
    from explore.eval.geneval import CATEGORIES, evaluate_geneval, geneval_examples
    from explore.runs import read_jsonl

    if only is not None and out is None:
        raise ValueError("only needs out: the folder the timing run reads the evaluations from")
    examples = geneval_examples(prompts, seed)
    folders = (efficient, baseline)
    pipes = {name: load_pipeline(folders[i]) for i, name in enumerate(names) if only in (None, i)}
    settings = [(s, g, n) for s in samplers for g in guidances for n in steps]
    rows, records = {}, {}
    with tempfile.TemporaryDirectory() as scratch:
        for name, pipe in pipes.items():
            index = names.index(name)
            for s, g, n in settings:
                folder = Path(out or scratch) / f"{index}-{s}-{g:g}-{n}"  # made by world-geneval's header
                summary = evaluate_geneval(set_scheduler(pipe, s), examples, folder, layout="auto", seed=seed, steps=n,
                                           guidance=g, progress=False)  # fmt: skip
                rows[name, s, g, n] = {"params": sum(p.numel() for p in pipe.unet.parameters()), **summary}
                records[name, s, g, n] = read_jsonl(folder / "predictions.jsonl")
                if only is not None:
                    print(f"{name} {s} guidance {g:g} {n} steps: world-geneval {summary['seen']['generated']['overall']:.3f}"
                          f" seen / {summary['held_out']['generated']['overall']:.3f} held-out", flush=True)  # fmt: skip
    if only is not None:
        return
    # s / image at batch 1 (latency) and at batch 16 (throughput: what CFG's doubled batch costs shows here; at
    # batch 1 on a CPU the per-call overhead hides it), interleaved rounds, the best of each; eager, then compiled
    timings = {"eager": _seconds_per_image(pipes, rows)}
    if channels_last:
        timings["eager, channels_last"] = _seconds_per_image(pipes, rows, channels_last=True)
    if compiled:
        for pipe in pipes.values():
            for module in (pipe.unet, pipe.text_encoder, pipe.vae.decoder if pipe.latent else None):
                if module is not None:
                    module.compile(dynamic=False)
        formats = (False, True) if channels_last else (False,)
        for memory in formats:  # a UNet's memory format changes its compiled graph: each compiled before it is timed
            _set_channels_last(pipes, memory)
            for name, s, g in sorted({(name, s, g) for name, s, g, _ in rows}):
                for batch in (1, THROUGHPUT_BATCH):
                    latency_per_image(pipes[name], steps=2, repeats=1, scheduler=s, guidance=g, batch=batch)
            mode = "torch.compile, channels_last" if memory else "torch.compile"
            timings[mode] = _seconds_per_image(pipes, rows, channels_last=memory)  # (back to the default after)
    if channels_last:  # each UNet in the faster of its two measured formats, per mode, row and batch
        for mode in [m for m in timings if not m.endswith("channels_last")]:
            default, last = timings[mode], timings[f"{mode}, channels_last"]
            timings[f"{mode}, faster format"] = {
                batch: {key: min(default[batch][key], last[batch][key]) for key in default[batch]} for batch in default
            }
    if out is not None:  # the exact seconds beside the evaluations (the table rounds them), to match other control runs
        record = [{"mode": mode, "batch": batch, "unet": name, "sampler": s, "guidance": g, "steps": n, "seconds": sec}
                  for mode, t in timings.items() for batch, by_key in t.items()
                  for (name, s, g, n), sec in by_key.items()]  # fmt: skip
        (Path(out) / "timings.json").write_text(json.dumps(record, indent=1) + "\n")
    print(f"## {names[0]} vs {names[1]}, same budget: world-geneval ({prompts} prompts per "
          f"category x 4 images, seed {seed}, grounded, {' / '.join(samplers)}), CPU {torch.get_num_threads()} "
          "threads\n")  # fmt: skip
    columns = "".join(f" | s / image{'' if mode == 'eager' else ', ' + mode} | s / image, batch {THROUGHPUT_BATCH}"
                      f"{'' if mode == 'eager' else ', ' + mode}" for mode in timings)  # fmt: skip
    print("| UNet | parameters | sampler | guidance | steps | pairs | overall | " + " | ".join(CATEGORIES) +
          f" | scene objects | exact{columns} |")  # fmt: skip
    print("|---|---:|---|---:|---:|---|---:|" + "---:|" * len(CATEGORIES) + "---:|---:|" + "---:|---:|" * len(timings))
    for (name, s, g, n), r in rows.items():
        for pairs in ("seen", "held_out"):
            scores = r[pairs]["generated"]
            cells = " | ".join(f"{scores[c]:.2f}" if c in scores else "-" for c in CATEGORIES)  # held-out: fewer
            times = "".join(
                f" | {t[1][name, s, g, n]:.3f} | {t[THROUGHPUT_BATCH][name, s, g, n]:.3f}" for t in timings.values()
            )
            print(f"| {name} | {r['params'] / 1e6:.2f} M | {s} | {g:g} | {n} | {pairs} | {scores['overall']:.3f} | "
                  f"{cells} | "
                  f"{scores['full_scene_objects']:.2f} | {scores['full_scene_exact']:.2f}{times} |")  # fmt: skip
    names = list(pipes)
    for mode, t in timings.items():
        print(f"\n### {mode}")
        for s, g, n in settings:
            e, b = (t[1][name, s, g, n] for name in names)
            eb, bb = (t[THROUGHPUT_BATCH][name, s, g, n] for name in names)
            print(f"\nspeed-up per image at {n} {s} steps, guidance {g:g}: {b / e:.2f}x at batch 1, "
                  f"{bb / eb:.2f}x at batch {THROUGHPUT_BATCH}")  # fmt: skip
        # The measure: for each baseline row, the fastest efficient row at least as faithful, on the seen
        # pairs and on the held-out ones alike, whatever its sampler.
        scores = {key: {p: rows[(names[0], *key)][p]["generated"]["overall"] for p in ("seen", "held_out")}
                  for key in settings}  # fmt: skip
        for s, g, n in settings:
            base = rows[names[1], s, g, n]
            target = {pairs: base[pairs]["generated"]["overall"] for pairs in ("seen", "held_out")}
            label = (f"{names[1]} at {s}, guidance {g:g}, {n} steps ({target['seen']:.3f} seen / "
                     f"{target['held_out']:.3f} held-out)")  # fmt: skip
            for batch in (1, THROUGHPUT_BATCH):
                timing = t[batch]
                match = fastest_match(scores, target, {key: timing[(names[0], *key)] for key in settings})
                if match is None:
                    print(f"\nat equal faithfulness to {label}: no {names[0]} row reaches it on both")
                    break
                sm, gm, m = match
                hit = rows[names[0], sm, gm, m]
                ratio = timing[names[1], s, g, n] / timing[names[0], sm, gm, m]
                print(f"\nat equal faithfulness to {label}, batch {batch}: {names[0]} at {sm}, guidance {gm:g}, "
                      f"{m} steps "
                      f"({hit['seen']['generated']['overall']:.3f} / {hit['held_out']['generated']['overall']:.3f}) "
                      f"is {ratio:.2f}x faster")  # fmt: skip
    _faithfulness_intervals(names, settings, rows, records)


def fastest_match(scores: dict, target: dict[str, float], seconds: dict):
    """Issue 13's match: of ``scores`` ({row: {"seen": overall, "held_out": overall}}), the row with the fewest
    ``seconds`` ({row: s / image}) that is at least as faithful as ``target`` on seen and held-out pairs both; None if
    no row is."""
    matches = [key for key, score in scores.items() if all(score[p] >= target[p] for p in target)]
    return min(matches, key=seconds.__getitem__) if matches else None


def _faithfulness_intervals(names: list[str], settings: list, rows: dict, records: dict) -> None:
    """How far apart two rows' world-geneval really is: for each row of the second pipeline, the first's row at the
    same setting and its most faithful row (the highest seen overall), each difference with a 95% paired bootstrap
    interval over the prompts (the same prompts, layouts and noise for both), seen and held-out."""
    from explore.eval.geneval import paired_difference

    print(f"\n### world-geneval differences, {names[0]} minus {names[1]} (95% paired bootstrap over prompts)")
    best = max(settings, key=lambda key: rows[(names[0], *key)]["seen"]["generated"]["overall"])
    for s, g, n in settings:
        parts = []
        for label, key in (("same setting", (s, g, n)), (f"its most faithful, {best[0]} {best[2]} steps", best)):
            cells = []
            for pairs in ("seen", "held_out"):
                d, low, high = paired_difference(records[(names[0], *key)], records[names[1], s, g, n], pairs)
                cells.append(f"{pairs.replace('_', '-')} {d:+.3f} [{low:+.3f}, {high:+.3f}]")
            parts.append(f"{label}: " + ", ".join(cells))
        print(f"\nagainst {names[1]} at {s}, guidance {g:g}, {n} steps — " + "; ".join(parts))


def spacing_scheduler(pipe, start: int | None):
    """DPM-Solver++ on ``pipe``'s noise schedule (:func:`make_scheduler`'s settings); ``start``: the steps spread
    evenly from training timestep ``start`` down (diffusers' "linspace" spacing with ``lambda_min_clipped`` at
    lambda(start)), None: the folder's own spacing ("leading" for a latent model, "trailing" if it predicts v)."""
    from explore.diffusion.pipeline import make_scheduler
    from explore.errors import ExploreError

    scheduler = make_scheduler("dpm", pipe.scheduler.config, latent=pipe.latent)
    if start is None:
        return scheduler
    if not 0 < start < scheduler.config.num_train_timesteps:
        raise ExploreError(f"--spacing-start {start} is not a training timestep (1 to "
                           f"{scheduler.config.num_train_timesteps - 1})")  # fmt: skip
    return make_scheduler("dpm", pipe.scheduler.config, latent=pipe.latent, timestep_spacing="linspace",
                          lambda_min_clipped=float(scheduler.lambda_t[start]))  # fmt: skip


def spacing_table(folders: list[Path], starts: list[int], steps: int, prompts: int, seed: int) -> None:
    """world-geneval of each pipeline at ``steps`` sampling steps: DPM-Solver++ with the folder's spacing, from each
    of ``starts``, and UniPC (see the module docstring, 8)."""
    from explore.diffusion.pipeline import make_scheduler
    from explore.eval.geneval import evaluate_geneval, geneval_examples

    examples = geneval_examples(prompts, seed)
    print(f"## few-step spacing: world-geneval ({prompts} prompts per category x 4 images, seed {seed}, grounded, "
          f"guidance 1), {steps} steps\n")  # fmt: skip
    print("| pipeline | sampler | timesteps | seen | held-out |\n|---|---|---|---:|---:|")
    with tempfile.TemporaryDirectory() as scratch:
        for index, folder in enumerate(folders):
            pipe = load_pipeline(folder)
            variants = [("DPM-Solver++", spacing_scheduler(pipe, start)) for start in [None, *starts]]
            variants.append(("UniPC", make_scheduler("unipc", pipe.scheduler.config, latent=pipe.latent)))
            for number, (name, scheduler) in enumerate(variants):
                pipe.scheduler = scheduler
                summary = evaluate_geneval(pipe, examples, Path(scratch) / f"{index}-{number}", layout="auto",
                                           seed=seed, steps=steps, guidance=1.0, progress=False)  # fmt: skip
                scheduler.set_timesteps(steps)
                seen, held = (summary[p]["generated"]["overall"] for p in ("seen", "held_out"))
                print(f"| {folder} | {name} | {' '.join(map(str, scheduler.timesteps.tolist()))} | {seen:.3f} | "
                      f"{held:.3f} |", flush=True)  # fmt: skip


def _seconds_per_image(pipes: dict, rows: dict, channels_last: bool = False) -> dict[int, dict]:
    """Best of three interleaved rounds of seconds per image, at batch 1 and at THROUGHPUT_BATCH, for every
    (pipeline name, sampler, guidance, steps) of ``rows``; ``channels_last``: every UNet in that memory format
    for the measurement, back to the default after."""
    _set_channels_last(pipes, channels_last)
    seconds = {(key, batch): [] for key in rows for batch in (1, THROUGHPUT_BATCH)}
    for _ in range(3):
        for ((name, s, g, n), batch), times in seconds.items():
            times.append(latency_per_image(pipes[name], steps=n, repeats=1, scheduler=s, guidance=g, batch=batch))
    _set_channels_last(pipes, False)
    return {batch: {key: min(seconds[key, batch]) for key in rows} for batch in (1, THROUGHPUT_BATCH)}


def _set_channels_last(pipes: dict, channels_last: bool) -> None:
    """Every pipeline's UNet in channels-last memory format or back to the default (contiguous): the weights'
    layout only, the same values (diffusers' ``unet.to(memory_format=torch.channels_last)``)."""
    memory = torch.channels_last if channels_last else torch.contiguous_format
    for pipe in pipes.values():
        pipe.unet.to(memory_format=memory)


@torch.no_grad()
def autoencoder_ceiling(folder: Path, prompts: int, seed: int) -> None:
    """What a latent generator can reach at best: world-geneval scored on the real renders of every image's layout
    after a round trip through the autoencoder (encode, decode), beside the real renders themselves."""
    from diffusers import AutoencoderKL

    from explore.diffusion.autoencoder import decode
    from explore.diffusion.data import to_tensor
    from explore.eval.geneval import CATEGORIES, IMAGES_PER_PROMPT, geneval_examples, image_layout, score_image
    from explore.world.render import render

    vae = AutoencoderKL.from_pretrained(folder).eval()
    examples = geneval_examples(prompts, seed)
    side = 64
    classifier = calibrated_classifier(side)
    scores: dict[tuple[str, str], list[float]] = {}
    for p, example in enumerate(examples):
        for i in range(IMAGES_PER_PROMPT):
            layout = image_layout(example, seed, i, p)
            latents = vae.encode(to_tensor([render(layout, side)])).latent_dist.mode() * vae.config.scaling_factor
            pixels = ((decode(vae, latents)[0].permute(1, 2, 0) + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
            checks = score_image(Image.fromarray(pixels.numpy()), example, layout, classifier)  # as world-geneval scores
            group = example.meta["set"]
            if example.category == "full_scene":
                scores.setdefault((group, "scene objects"), []).append(checks["object"])
                scores.setdefault((group, "exact"), []).append(checks["passed"])
            else:
                scores.setdefault((group, example.category), []).append(checks["passed"])
    columns = [*CATEGORIES, "scene objects", "exact"]
    print(f"## Autoencoder ceiling: world-geneval on real renders through {folder} ({prompts} prompts per category x "
          f"{IMAGES_PER_PROMPT} layouts, seed {seed}); real renders without the round trip score 1.00\n")
    print("| pairs | overall | " + " | ".join(columns) + " |")
    print("|---|---:|" + "---:|" * len(columns))
    for pairs in ("seen", "held_out"):
        means = {c: float(np.mean(scores[(pairs, c)])) for c in columns if (pairs, c) in scores}
        overall = np.mean([means[c] for c in CATEGORIES if c in means])
        print(f"| {pairs} | {overall:.3f} | " + " | ".join(f"{means[c]:.2f}" if c in means else "-" for c in columns) + " |")


def decoder_costs(folders: list[Path], steps: int, rounds: int = 5) -> None:
    """Section 6: each latent pipeline's decoder alone and a whole sample, interleaved rounds, ratios to the first."""
    pipes = {str(folder): load_pipeline(folder) for folder in folders}
    for name, pipe in pipes.items():
        if not pipe.latent:
            raise SystemExit(f"--decoders {name}: this pipeline denoises pixels; it has no decoder")
    keys = ("batch 1", f"batch {THROUGHPUT_BATCH}", "sample")
    best = {name: dict.fromkeys(keys, float("inf")) for name in pipes}
    for _ in range(rounds):
        for name, pipe in pipes.items():
            side, channels = pipe.unet.config.sample_size, pipe.unet.config.out_channels
            for key, batch in zip(keys, (1, THROUGHPUT_BATCH)):
                latents = torch.randn(batch, channels, side, side)
                with torch.no_grad():
                    pipe.vae.decode(latents)  # warm-up
                    started = time.perf_counter()
                    for _ in range(10):
                        pipe.vae.decode(latents)
                best[name][key] = min(best[name][key], (time.perf_counter() - started) / 10 / batch)
            guidance = pipe.default_guidance("auto")
            sample = latency_per_image(pipe, steps=steps, repeats=1, scheduler="ddim", guidance=guidance)
            best[name]["sample"] = min(best[name]["sample"], sample)
    print(f"## Decoders: the autoencoder alone and a whole sample (DDIM {steps}, each folder's guidance, batch 1), "
          f"CPU {torch.get_num_threads()} threads, best of {rounds} interleaved rounds\n")  # fmt: skip
    print(f"| pipeline | decoder | decoder parameters | ms / image, batch 1 | ms / image, batch {THROUGHPUT_BATCH} "
          "| s / sample | sample vs the first |")  # fmt: skip
    print("|---|---|---:|---:|---:|---:|---:|")
    first = next(iter(best.values()))["sample"]
    for name, pipe in pipes.items():
        t = best[name]
        params = sum(p.numel() for p in pipe.vae.decoder.parameters()) / 1e3
        print(f"| {name} | {type(pipe.vae).__name__} | {params:.0f} k | {t[keys[0]] * 1e3:.2f} | "
              f"{t[keys[1]] * 1e3:.2f} | {t['sample']:.3f} | {first / t['sample']:.2f}x |")  # fmt: skip


def denormal_costs(paths: list[Path], batch: int, rounds: int = 3, calls: int = 4) -> None:
    """Forward + backward of each pipeline's UNet (trained, and an untrained twin built from its config) with
    denormals flushed (``train.flush_denormal``'s context) and not: a trained efficient UNet's backward pass makes
    denormal intermediates that x86 CPUs compute far slower (measured, session 37); its weights hold none."""
    from explore.diffusion.train import denormals_flushed

    print(f"## Denormal floats: UNet forward + backward at batch {batch}, CPU {torch.get_num_threads()} threads\n")
    print("| pipeline | UNet | weights | s, not flushed | s, flushed | not flushed / flushed |")
    print("|---|---|---|---:|---:|---:|")
    for path in paths:
        trained = load_pipeline(path).unet
        torch.manual_seed(0)
        fresh = type(trained).from_config(trained.config)
        channels = layout_channels(trained)
        g = torch.Generator().manual_seed(0)
        size = trained.config.sample_size
        x = torch.randn(batch, trained.config.out_channels, size, size, generator=g)
        context = torch.randn(batch, 48, trained.config.cross_attention_dim, generator=g)
        mask = torch.ones(batch, 48, dtype=torch.long)
        layout = torch.rand(batch, channels, GRID, GRID, generator=g) if channels else None
        timesteps = torch.randint(0, 1000, (batch,), generator=g)
        for label, unet in (("trained", trained), ("untrained", fresh)):
            best = {False: float("inf"), True: float("inf")}
            for _ in range(rounds):  # interleaved, so that load on the machine hits both alike
                for flush in (False, True):
                    with denormals_flushed(flush):
                        start = time.perf_counter()
                        for _ in range(calls):
                            unet.zero_grad(set_to_none=True)
                            predict_noise(unet, x, timesteps, context, mask, layout).square().mean().backward()
                        best[flush] = min(best[flush], (time.perf_counter() - start) / calls)
            print(f"| {path} | {type(unet).__name__} | {label} | {best[False]:.3f} | {best[True]:.3f} | "
                  f"{best[False] / best[True]:.2f}x |", flush=True)  # fmt: skip


def _budget_run(config, out: str) -> None:
    """One recipe's real training loop in ``out`` (a child process, one thread)."""
    torch.set_num_threads(1)
    from explore.diffusion.train import train_diffusion

    train_diffusion(config.model_copy(update={"output_dir": out}), progress=False)


def training_budget(paths: list[Path], steps: int, reference: int | None, compiled: bool = False) -> None:
    """Training steps per second of each recipe, all trained at once (the recipes' data caches are built first,
    one at a time, so no process times a cache build), and the equal-wall-clock step counts; ``compiled``: every
    recipe with ``train.compile`` on."""
    from explore.diffusion.cache import training_data
    from explore.diffusion.latents import latent_data
    from explore.runs import read_jsonl

    configs = []
    for path in paths:
        config = load_diffusion_config(path)
        pipe = build_pipeline(config)
        if pipe.latent:  # build (or check) the data cache before any timing
            latent_data(config.data, pipe.vae, progress=False)
        else:
            training_data(config.data, progress=False)
        validation = config.validation.model_copy(update={"every": steps + 1})  # only the last step's, after timing
        train = config.train.model_copy(update={"steps": steps, "compile": compiled or config.train.compile})
        configs.append(config.model_copy(update={"train": train,
                                                 "validation": validation, "checkpoint_every": steps}))  # fmt: skip
    rates = []
    with tempfile.TemporaryDirectory() as tmp:
        context = multiprocessing.get_context("spawn")
        jobs = [context.Process(target=_budget_run, args=(config, f"{tmp}/{i}")) for i, config in enumerate(configs)]
        for job in jobs:
            job.start()
        for job in jobs:
            job.join()
        for i, (path, job) in enumerate(zip(paths, jobs)):
            if job.exitcode != 0:
                raise SystemExit(f"training {path} for the budget failed (exit {job.exitcode})")
            timed = [record for record in read_jsonl(f"{tmp}/{i}/train_log.jsonl") if "steps_per_s" in record]
            # the log's rate is since the loop started (data, every step, no validation), so it holds a compiled
            # recipe's one-time compilation; the second half's steps alone give the steady rate, and the difference
            # the start-up seconds a full run pays once
            last = timed[-1]
            middle = min(timed[:-1] or timed, key=lambda record: abs(record["step"] - steps / 2))
            elapsed = last["step"] / last["steps_per_s"]
            spent = elapsed - middle["step"] / middle["steps_per_s"]  # 0 with one logged step: the whole rate
            steady = (last["step"] - middle["step"]) / spent if spent > 0 else last["steps_per_s"]
            rates.append((last["steps_per_s"], steady, max(0.0, elapsed - last["step"] / steady)))
    print(f"## Training budgets: {steps} steps of each recipe, {len(paths)} at once, one thread each\n")
    header = "| recipe | UNet | steps / s | s / step | vs the first | steady steps / s (second half) | start-up s |"
    header += f" steps in the first's wall-clock for {reference} (steady rate + start-up) |" if reference else ""
    print(header)
    print("|---|---|---:|---:|---:|---:|---:|" + ("---:|" if reference else ""))
    first_rate, first_steady, first_startup = rates[0]
    for path, config, (rate, steady, startup) in zip(paths, configs, rates):
        row = (f"| {path} | {config.model.kind} | {rate:.3f} | {1 / rate:.2f} | {rate / first_rate:.2f}x | "
               f"{steady:.3f} | {startup:.0f} |")  # fmt: skip
        if reference:
            wall = first_startup + reference / first_steady
            row += f" {round(max(0.0, wall - startup) * steady):,} |"
        print(row)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/diffusion/shapes-small.yaml", help="widths for the UNet table")
    parser.add_argument("--checkpoint", type=Path, help="trained efficient pipeline (enables faithfulness)")
    parser.add_argument("--baseline-checkpoint", type=Path, help="trained diffusers-UNet pipeline")
    parser.add_argument("--prompts", type=int, default=64, help="held-out test prompts for faithfulness")
    parser.add_argument("--judge", action="store_true", help="also score with the embedded VLM judge (TIFA)")
    parser.add_argument("--geneval", type=Path, help="grounded pipeline: world-geneval by path, sampler, guidance")
    parser.add_argument("--geneval-prompts", type=int, default=4, help="world-geneval prompts per category")
    parser.add_argument("--geneval-seed", type=int, default=31337, help="world seed of the world-geneval prompts")
    parser.add_argument("--autoencoder-ceiling", type=Path, metavar="AUTOENCODER",
                        help="world-geneval on real renders through this autoencoder (a latent model's bound)")
    parser.add_argument("--compare", type=Path, nargs=2, metavar=("EFFICIENT", "BASELINE"),
                        help="two grounded pipelines trained on the same budget: world-geneval and s / image")
    parser.add_argument("--compare-steps", type=int, nargs="+", default=[20],
                        help="--compare at these step counts (the speed / quality curve of each UNet)")
    parser.add_argument("--compare-guidance", type=float, nargs="+", default=[3.0],
                        help="--compare at these guidance scales (1: one UNet pass per step), each UNet at each")
    parser.add_argument("--compare-names", nargs=2, default=["efficient", "diffusers UNet2DConditionModel"],
                        metavar=("FIRST", "SECOND"), help="--compare: what to call the two pipelines in the table")
    parser.add_argument("--compare-samplers", nargs="+", default=["ddim"], choices=["ddim", "dpm", "unipc"],
                        help="--compare with these samplers (each at every step count and guidance)")
    parser.add_argument("--compare-out", type=Path, metavar="DIR",
                        help="--compare: keep each evaluation's images and predictions here (a re-run resumes them)")
    parser.add_argument("--compare-compile", action="store_true",
                        help="--compare: time both pipelines through torch.compile (UNet, text encoder, decoder)")
    parser.add_argument("--compare-channels-last", action="store_true",
                        help="--compare: also time both UNets in channels-last memory format; match on each one's faster")
    parser.add_argument("--compare-only", type=int, choices=[0, 1], metavar="INDEX",
                        help="--compare: only evaluate pipeline INDEX (0: EFFICIENT, 1: BASELINE) into --compare-out, "
                             "no timing (run the two as two processes, then the timing run alone)")
    parser.add_argument("--decoders", type=Path, nargs="+", metavar="PIPELINE",
                        help="latent pipelines: their decoders alone and a whole sample, side by side")
    parser.add_argument("--decoders-steps", type=int, default=20, help="--decoders: DDIM steps of the sample")
    parser.add_argument("--budget", type=Path, nargs="+", metavar="CONFIG",
                        help="training recipes: steps / s of each, trained at once, one thread each")
    parser.add_argument("--budget-steps", type=int, default=100, help="--budget: training steps of each recipe")
    parser.add_argument("--budget-compile", action="store_true",
                        help="--budget: every recipe with train.compile on (torch.compile)")
    parser.add_argument("--budget-reference", type=int, metavar="STEPS",
                        help="--budget: the first recipe's step count; prints each recipe's steps in its wall-clock")
    parser.add_argument("--denormals", type=Path, nargs="+", metavar="PIPELINE",
                        help="UNet forward + backward with denormal floats flushed and not (trained and untrained)")
    parser.add_argument("--denormals-batch", type=int, default=32, help="--denormals: batch size")
    parser.add_argument("--spacing", type=Path, nargs="+", metavar="PIPELINE",
                        help="latent grounded pipelines: world-geneval at few steps by timestep spacing")
    parser.add_argument("--spacing-start", type=int, nargs="+", default=[950, 900, 850],
                        help="--spacing: first timesteps of the evenly spread schedules")
    parser.add_argument("--spacing-steps", type=int, default=4, help="--spacing: sampling steps")
    args = parser.parse_args()
    torch.manual_seed(0)
    if args.spacing is not None:
        spacing_table(args.spacing, args.spacing_start, args.spacing_steps, args.geneval_prompts, args.geneval_seed)
        return
    if args.denormals is not None:
        denormal_costs(args.denormals, args.denormals_batch)
        return
    if args.budget is not None:
        training_budget(args.budget, args.budget_steps, args.budget_reference, args.budget_compile)
        return
    if args.decoders is not None:
        decoder_costs(args.decoders, args.decoders_steps)
        return
    if args.geneval is not None:
        geneval_tables(args.geneval, args.geneval_prompts, args.geneval_seed)
        return
    if args.autoencoder_ceiling is not None:
        autoencoder_ceiling(args.autoencoder_ceiling, args.geneval_prompts, args.geneval_seed)
        return
    if args.compare is not None:
        if args.compare_only is not None and args.compare_out is None:
            parser.error("--compare-only needs --compare-out: the folder the timing run reads the evaluations from")
        compare_geneval(*args.compare, args.geneval_prompts, args.geneval_seed, tuple(args.compare_steps),
                        tuple(args.compare_guidance), tuple(args.compare_names), args.compare_compile,
                        tuple(args.compare_samplers), args.compare_out, args.compare_only, args.compare_channels_last)
        return
    config = load_diffusion_config(args.config)

    print(f"## UNets at the widths of {args.config} (CPU, {torch.get_num_threads()} threads)\n")
    rows = {}
    for name, variant in (("efficient separable", _variant(config, kind="efficient", conv_type="separable")),
                          ("efficient plain 3x3", _variant(config, kind="efficient", conv_type="plain")),
                          ("diffusers UNet2DConditionModel", _variant(config, kind="diffusers"))):  # fmt: skip
        pipe = build_pipeline(variant)
        rows[name] = {"params": sum(p.numel() for p in pipe.unet.parameters()),
                      "image_s": latency_per_image(pipe), "step_s": train_step_seconds(pipe)}  # fmt: skip
    base = rows["diffusers UNet2DConditionModel"]
    print("| UNet | parameters | s / image (DPM 20, CFG) | speed-up | s / train step (b32) | speed-up |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, r in rows.items():
        print(
            f"| {name} | {r['params'] / 1e6:.2f} M | {r['image_s']:.3f} | {base['image_s'] / r['image_s']:.2f}x "
            f"| {r['step_s']:.3f} | {base['step_s'] / r['step_s']:.2f}x |"
        )

    if args.checkpoint is None:
        print("\n(pass --checkpoint for faithfulness and the sampler table)")
        return
    vlm = processor = None
    if args.judge:
        from explore.models.loading import load_model

        vlm, processor = load_model("embedded")
    trained = load_pipeline(args.checkpoint)
    examples = t2i_examples("test", args.prompts, resolution=trained.image_size)
    bound = real_upper_bound(examples, vlm, processor)
    judged = " | TIFA (VLM) |" if args.judge else " |"
    print(f"\n## Faithfulness on {args.prompts} held-out prompts (test split); real renders = upper bound\n")
    if args.baseline_checkpoint is not None:
        print("| UNet | object | exact |" + (" TIFA |" if args.judge else "") + " s / image |")
        print("|---|---:|---:|" + ("---:|" if args.judge else "") + "---:|")
        for name, folder in (("efficient", args.checkpoint), ("diffusers baseline", args.baseline_checkpoint)):
            r = faithfulness(load_pipeline(folder), examples, "dpm", 20, vlm, processor)
            tifa = f" {r['tifa']:.3f} |" if args.judge else ""
            print(f"| {name} | {r['object']:.3f} | {r['exact']:.3f} |{tifa} {r['s_per_image']:.3f} |")
        print()
    print("| sampler | steps | object | exact | exact / real" + judged + " s / image |")
    print("|---|---:|---:|---:|---:|" + ("---:|" if args.judge else "") + "---:|")
    print(f"| real renders | - | {bound['object']:.3f} | {bound['exact']:.3f} | 1.00 |"
          + (f" {bound['tifa']:.3f} |" if args.judge else "") + " - |")  # fmt: skip
    for scheduler, steps in SAMPLERS:
        r = faithfulness(trained, examples, scheduler, steps, vlm, processor)
        ratio = r["exact"] / bound["exact"] if bound["exact"] else float("nan")
        tifa = f" {r['tifa']:.3f} |" if args.judge else ""
        cells = f"{r['object']:.3f} | {r['exact']:.3f} | {ratio:.2f} |{tifa} {r['s_per_image']:.3f}"
        print(f"| {scheduler} | {steps} | {cells} |")


if __name__ == "__main__":
    from explore.errors import ExploreError

    try:
        main()
    except ExploreError as error:  # bad input (a folder of another run, a missing pipeline): one line, exit 1
        raise SystemExit(f"error: {error}") from None
