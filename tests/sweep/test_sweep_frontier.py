"""The frontier operators in a sweep (width pruning, FastV, layer-wise distillation) on a tiny T5-backed model,
the packaged frontier config, and the recipe hashes of points written before those operators existed."""

import json
from pathlib import Path

from explore.models.loading import load_model
from explore.sweep.config import SweepConfig, load_sweep_config
from explore.sweep.run import RESULTS, read_results, run_sweep

FRONTIER = Path(__file__).resolve().parents[2] / "configs" / "sweep" / "frontier.yaml"


def test_sweep_runs_width_fastv_and_layerwise_distillation(tmp_path, tiny_folder):
    out = tmp_path / "sweep"
    config = SweepConfig.model_validate({
        "model": str(tiny_folder), "output_dir": str(out), "eval_batch_size": 8, "calibration_examples": 4,
        "tasks": [{"name": "world-vqa", "limit": 4}, {"name": "world-caption", "limit": 2}],
        "cost": {"latency_examples": 2, "batch_size": 2, "flops_examples": 2, "min_run_time": 0.01, "rounds": 1},
        "recovery": {"layerwise": {"method": "full", "components": ["lm"], "steps": 2, "batch_size": 4,
                                   "warmup_steps": 0, "distill_weight": 0.5, "distill_hidden_weight": 1.0,
                                   "distill_attention_weight": 1.0}},
        "points": [
            {"name": "narrow", "compress": {"width": [{"component": "lm", "ffn_keep": 0.5, "heads_keep": 0.5},
                                                      {"component": "vision", "ffn_keep": 0.25}]}},
            {"name": "fastv+layerwise", "compress": {"fastv": {"ratio": 0.5, "layer": 0}}, "recover": "layerwise"},
            {"name": "fastv-int8", "compress": {"fastv": {"ratio": 0.5, "layer": 0}, "precision": "int8"}},
        ],
    })  # fmt: skip
    run_sweep(config, progress=False)
    results = read_results(out / RESULTS)
    assert list(results) == ["original", "narrow", "fastv+layerwise", "fastv-int8"]
    base = results["original"]["cost"]
    narrow = results["narrow"]
    assert narrow["label"] == "lm-ffn50%-heads50% · vision-ffn25%"
    assert narrow["dropped"] == {"lm width": {"heads": 1, "ffn": 16}, "vision width": {"ffn": 8}}
    assert narrow["cost"]["params_non_embedding"] < base["params_non_embedding"]
    fastv = results["fastv+layerwise"]
    assert fastv["label"] == "fastv50%@0"
    # FastV's work is counted (ranking at layer 0, fewer tokens after it); at width 16 with 3 of 6 image tokens
    # dropped before one encoder block the two nearly cancel, so only the change is asserted here
    assert fastv["cost"]["flops_per_example"] != base["flops_per_example"]
    assert fastv["cost"]["params_non_embedding"] == base["params_non_embedding"]
    assert fastv["recovery"]["layerwise_loss_start"] > 0
    for name in ("fastv+layerwise", "fastv-int8"):  # the saved folders carry the setting, and explore restores it
        model, _ = load_model(results[name]["model_dir"])
        assert model.config.explore_fastv == {"ratio": 0.5, "layer": 0} and hasattr(model, "_explore_fastv")
    assert "narrow" in (out / "report.md").read_text()


def test_points_without_the_new_operators_keep_their_recipe_hashes():
    """Literal hashes computed with explore before width / FastV / layer-wise distillation existed: a sweep
    written then still resumes (a changed hash would be refused as a changed recipe)."""
    config = SweepConfig.model_validate({
        "model": "m", "tasks": [{"name": "world-vqa"}],
        "recovery": {"kd": {"method": "full", "components": ["lm"], "steps": 30, "distill_weight": 0.5}},
        "points": [{"name": "a", "compress": {"queries": {"keep": 3}, "depth": [{"component": "vision", "drop": 1}]},
                    "recover": "kd"},
                   {"name": "b", "compress": {"resolution": 48, "precision": "int8"}}],
    })  # fmt: skip
    hashes = {p.name: (p.fingerprint(config.recovery_for(p)), p.model_key(config.recovery_for(p)))
              for p in config.all_points()}  # fmt: skip
    assert hashes == {"original": ("5ba8237d9ad61035", "694c48a60779cb3c"),
                      "a": ("06df9eedb0969503", "0a50904ed737cdc6"),
                      "b": ("402c900bebb2ae22", "6ba41c202f163480")}  # fmt: skip


def test_frontier_config_is_valid():
    config = load_sweep_config(FRONTIER)
    points = config.all_points()
    assert len({p.name for p in points}) == len(points) > 5
    assert any(p.compress.width for p in points) and any(p.compress.fastv for p in points)
    assert any(config.recovery_for(p) and config.recovery_for(p).distill_hidden_weight > 0 for p in points)


def test_cli_compress_with_width_fastv_and_w4a16(tmp_path, tiny_folder, explore_cli):
    from transformers import InstructBlipForConditionalGeneration

    out = tmp_path / "small"
    code, stdout, err = explore_cli("compress", "--model", str(tiny_folder), "--out", str(out), "--width",
                                  "lm:ffn=0.5,heads=0.5", "--width", "qformer:ffn=0.5", "--fastv", "0.5@1",
                                  "--precision", "w4a16")  # fmt: skip
    assert code == 0 and "lm-ffn50%-heads50% · qformer-ffn50% · fastv50%@1 · w4a16" in stdout, err
    model = InstructBlipForConditionalGeneration.from_pretrained(out)  # plain transformers
    assert model.config.text_config.d_ff == 16 and model.config.text_config.num_heads == 1
    assert model.config.qformer_config.intermediate_size == 16
    assert model.config.explore_fastv == {"ratio": 0.5, "layer": 1}
    assert json.loads((out / "config.json").read_text())["quantization_config"]["format"] == "pack-quantized"
    loaded, _ = load_model(out)
    assert hasattr(loaded, "_explore_fastv")
    for bad in (["--width", "lm:ffn=half"], ["--width", "lm:depth=0.5"], ["--fastv", "0.5"]):
        code, _, err = explore_cli("compress", "--model", str(tiny_folder), "--out", str(tmp_path / "x"), *bad)
        assert code == 2 and len(err.strip().splitlines()) == 1 and not (tmp_path / "x").exists(), (bad, err)
