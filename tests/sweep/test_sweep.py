"""The sweep on a tiny T5-backed InstructBLIP: config validation, results, resume and the report."""

import json
from dataclasses import replace

import pytest

from explore.errors import ConfigError, ExploreError
from explore.models.build import build_model, build_processor
from explore.models.loading import save_model
from explore.models.presets import get_preset
from explore.models.tokenizer import build_word_tokenizer
from explore.sweep import run as sweep_run
from explore.sweep.config import SweepConfig, default_config_path, load_sweep_config
from explore.sweep.report import analyse, cheapest, pareto
from explore.sweep.run import RESULTS, read_results, run_sweep
from explore.world.vocabulary import vocabulary


def sweep_config(folder, out, **overrides) -> SweepConfig:
    raw = {
        "model": str(folder),
        "output_dir": str(out),
        "eval_batch_size": 8,
        "calibration_examples": 4,
        "tasks": [{"name": "world-vqa", "limit": 6}, {"name": "world-judge", "limit": 6},
                  {"name": "world-caption", "limit": 3}],
        "cost": {"latency_examples": 4, "batch_size": 2, "flops_examples": 2, "min_run_time": 0.01},
        "recovery": {"lora": {"method": "lora", "components": ["qformer"], "steps": 2, "batch_size": 4, "lr": 1e-3,
                              "warmup_steps": 0},
                     "full": {"method": "full", "components": ["qformer", "query_tokens"], "steps": 2, "batch_size": 4,
                              "lr": 1e-3, "warmup_steps": 0, "distill_weight": 0.5}},
        "points": [
            {"name": "q3", "compress": {"queries": {"keep": 3, "strategy": "merge"}}},
            {"name": "q3-int8", "compress": {"queries": {"keep": 3, "strategy": "merge"}, "precision": "int8"}},
            {"name": "q3+full", "compress": {"queries": {"keep": 3, "strategy": "merge"}}, "recover": "full"},
            {"name": "lm-dec-1", "compress": {"depth": [{"component": "lm_decoder", "drop": 1}]}, "recover": "lora"},
        ],
        "grid": {"compress": {"vit-last": {"depth": [{"component": "vision", "drop": 1, "by": "last"}]}},
                 "recover": ["none"]},
    }  # fmt: skip
    raw.update(overrides)
    return SweepConfig.model_validate(raw)


def test_default_config_is_valid():
    config = load_sweep_config(default_config_path())
    assert config.model == "embedded"
    names = [p.name for p in config.all_points()]
    assert names[0] == "original" and len(names) == len(set(names)) > 3


def test_config_errors(tmp_path, tiny_folder):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: embedded\ntasks: [{name: world-vqa}]\npoints: [{name: a, compress: {querys: {keep: 2}}}]\n")
    with pytest.raises(
        ConfigError, match="unknown key 'points.0.compress.querys'.*allowed keys here: depth, fastv, precision"
    ):
        load_sweep_config(bad)
    with pytest.raises(ValueError, match="unknown recovery 'lora2'"):
        sweep_config(tiny_folder, tmp_path, points=[{"name": "a", "recover": "lora2"}])
    with pytest.raises(ValueError, match="two points are called 'a'"):
        sweep_config(tiny_folder, tmp_path, points=[{"name": "a"}, {"name": "a"}])
    with pytest.raises(ValueError, match="unknown precision"):
        sweep_config(tiny_folder, tmp_path, points=[{"name": "a", "compress": {"precision": "int3"}}])


def test_sweep_results_resume_and_report(tmp_path, tiny_folder, monkeypatch):
    out = tmp_path / "sweep"
    config = sweep_config(tiny_folder, out)
    run_sweep(config, config_path="tiny.yaml", progress=False)
    results = read_results(out / RESULTS)
    assert list(results) == ["original", "q3", "q3-int8", "q3+full", "lm-dec-1", "vit-last"]
    for record in results.values():
        assert set(record["scores"]) == {"world-vqa", "world-judge", "world-caption"}
        assert record["cost"]["params_non_embedding"] > 0 and record["cost"]["latency_b1_s"] > 0
    base, small = results["original"]["cost"], results["vit-last"]["cost"]
    assert small["params_non_embedding"] < base["params_non_embedding"]
    assert small["flops_per_example"] < base["flops_per_example"]
    assert results["lm-dec-1"]["dropped"]["lm_decoder"] in ([0], [1])
    assert results["vit-last"]["dropped"] == {"vision": [1]}
    assert results["lm-dec-1"]["recovery"]["steps"] == 2 and results["q3"]["recovery"] is None
    assert results["q3-int8"]["model_dir"].endswith("points/q3-int8/model-int8")
    assert len(list((out / "models").glob("*.json"))) == 5  # 6 points; q3 and q3-int8 share a model
    assert results["q3-int8"]["cost"]["disk_bytes"] < results["q3"]["cost"]["disk_bytes"]

    # the report: a row per point, retention of the original is 100%, plots and HTML exist
    report = (out / "report.md").read_text()
    for name in results:
        assert f"| {name} |" in report or f"| **{name}** |" in report
    assert "kept VQA acc" in report and "pareto_latency.png" in report
    assert (out / "pareto_latency.png").stat().st_size > 1000 and (out / "pareto_params.png").is_file()
    assert "<table>" in (out / "report.html").read_text()
    rows = analyse(config, results, list(results))
    assert [r["name"] for r in rows] == list(results)

    # resume: nothing is re-run when every point is in results.jsonl
    def fail(*args, **kwargs):
        raise AssertionError("a finished point ran again")

    monkeypatch.setattr(sweep_run, "run_point", fail)
    run_sweep(config, progress=False)

    # a kill while writing the last line: only that point runs again, from its saved model folder
    lines = (out / RESULTS).read_text().splitlines()
    (out / RESULTS).write_text("\n".join(lines[:-1]) + "\n" + lines[-1][:40])
    monkeypatch.undo()
    monkeypatch.setattr(sweep_run, "compress", fail)
    run_sweep(config, progress=False)
    assert list(read_results(out / RESULTS)) == ["original", "q3", "q3-int8", "q3+full", "lm-dec-1", "vit-last"]

    # a changed recipe under an old name is refused instead of mixing numbers
    changed = sweep_config(tiny_folder, out, points=[{"name": "q3", "compress": {"queries": {"keep": 2}}}])
    with pytest.raises(ExploreError, match="holds point 'q3' with a different recipe"):
        run_sweep(changed, progress=False)


def test_analyse_retention_and_target(tmp_path, tiny_folder):
    config = sweep_config(tiny_folder, tmp_path)

    def record(name, vqa, judge, cider, params, latency):
        cost = {"params_non_embedding": params, "disk_bytes": params * 4, "flops_per_example": params * 10,
                "latency_b1_s": latency, "latency_b2_s": latency / 2, "peak_memory_bytes": 1}  # fmt: skip
        return {"name": name, "scores": {"world-vqa": vqa, "world-judge": judge, "world-caption": cider}, "cost": cost}

    results = {
        "original": record("original", 0.6, 0.9, 2.0, 100, 0.01),
        "a": record("a", 0.45, 0.8, 1.8, 50, 0.005),  # VQA 75%, judge (0.3 / 0.4) = 75%, CIDEr 90%
        "b": record("b", 0.6, 0.6, 2.0, 20, 0.002),
    }  # judge 25% above chance kept: fails the target
    rows = {r["name"]: r for r in analyse(config, results, ["original", "a", "b"])}
    assert rows["original"]["min_retention"] == pytest.approx(1.0)
    assert rows["a"]["retention"]["world-judge"] == pytest.approx(0.75)
    assert rows["a"]["min_retention"] == pytest.approx(0.75) and rows["a"]["meets_target"]
    assert not rows["b"]["meets_target"] and rows["b"]["speedup_b1"] == pytest.approx(5.0)
    assert cheapest(list(rows.values()))["name"] == "a"
    zero = analyse(config, {"original": record("original", 0.0, 0.5, 0.0, 100, 0.01)}, ["original"])
    assert zero[0]["min_retention"] is None and not zero[0]["meets_target"]  # nothing to retain: not a pass


def test_pareto_and_cheapest():
    def row(name, latency, kept, meets=True):
        return {"name": name, "cost": {"latency_b1_s": latency, "flops_per_example": latency * 100},
                "min_retention": kept, "meets_target": meets, "params_ratio": 1.0}  # fmt: skip

    rows = [row("original", 10, 1.0), row("a", 5, 0.95), row("b", 6, 0.9), row("c", 2, 0.5, meets=False),
            row("d", 4, 0.8)]  # fmt: skip
    front = pareto(rows, lambda r: r["cost"]["latency_b1_s"])
    assert [r["name"] for r in front] == ["c", "d", "a", "original"]
    assert cheapest(rows)["name"] == "d"


def test_only_unknown_point(tmp_path, tiny_folder):
    with pytest.raises(ExploreError, match="no point called"):
        run_sweep(sweep_config(tiny_folder, tmp_path), only=["nope"], progress=False)


def test_results_lines_are_json(tmp_path, tiny_folder):
    out = tmp_path / "s"
    run_sweep(sweep_config(tiny_folder, out, points=[], grid=None), progress=False)
    lines = (out / RESULTS).read_text().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["name"] == "original"


def test_cli_sweep_runs_resumes_and_rewrites_the_report(tmp_path, tiny_folder, explore_cli):
    import yaml

    explore = explore_cli

    out = tmp_path / "out"
    raw = sweep_config(tiny_folder, out, points=[{"name": "q3", "compress": {"queries": {"keep": 3}}}], grid=None)
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(raw.model_dump(exclude_defaults=True)))
    code, _, err = explore("sweep", "--config", str(path), "--report-only")
    assert code == 2 and "no " in err and "run the sweep first" in err and len(err.strip().splitlines()) == 1
    code, stdout, _ = explore("sweep", "--config", str(path))
    assert code == 0 and "report.md" in stdout
    assert list(read_results(out / RESULTS)) == ["original", "q3"]
    (out / "report.md").unlink()
    code, _, _ = explore("sweep", "--config", str(path), "--report-only")
    report = (out / "report.md").read_text()
    assert code == 0 and "| q3 |" in report and f"explore sweep --config {path} --only '<name>'" in report
    bad = tmp_path / "bad.yaml"
    bad.write_text("tasks: [{name: world-vqa}]\nrecover: lora\n")
    code, _, err = explore("sweep", "--config", str(bad))
    assert code == 2 and "unknown key 'recover'" in err and len(err.strip().splitlines()) == 1


def test_cli_compress_writes_a_normal_model_folder(tmp_path, tiny_folder, explore_cli):
    from transformers import InstructBlipForConditionalGeneration

    explore = explore_cli

    out = tmp_path / "small"
    code, stdout, _ = explore("compress", "--model", str(tiny_folder), "--out", str(out), "--queries", "3",
                              "--drop", "vision=1", "--drop", "lm_decoder:0", "--resolution", "8")  # fmt: skip
    assert code == 0 and "lm_decoder [0]" in stdout
    model = InstructBlipForConditionalGeneration.from_pretrained(out)  # plain transformers
    assert model.config.num_query_tokens == 3 and model.config.vision_config.num_hidden_layers == 1
    assert model.config.text_config.num_decoder_layers == 1 and model.config.vision_config.image_size == 8
    code, _, err = explore("compress", "--model", str(tiny_folder), "--out", str(tmp_path / "x"), "--drop", "vit=1")
    assert code == 2 and "vit" in err and len(err.strip().splitlines()) == 1 and not (tmp_path / "x").exists()


def test_sweep_on_a_llama_backed_model(tmp_path):
    preset = replace(get_preset("tiny-llama"), name="tiny-llama-sweep", num_query_tokens=6)
    words = vocabulary()
    tokenizer, qtok = build_word_tokenizer(words), build_word_tokenizer(words, image_token=False)
    folder = save_model(build_model(preset, tokenizer, seed=0), build_processor(preset, tokenizer, qtok),
                        tmp_path / "llama")  # fmt: skip
    config = sweep_config(folder, tmp_path / "out", grid=None, points=[
        {"name": "q3-dec1", "compress": {"queries": {"keep": 3}, "depth": [{"component": "lm_decoder", "drop": 1}]},
         "recover": "lora"}])  # fmt: skip
    run_sweep(config, progress=False)
    results = read_results(tmp_path / "out" / RESULTS)
    assert results["q3-dec1"]["cost"]["params_non_embedding"] < results["original"]["cost"]["params_non_embedding"]
    assert results["q3-dec1"]["recovery"]["steps"] == 2 and len(results["q3-dec1"]["dropped"]["lm_decoder"]) == 1


def test_cuda_sweep_without_a_gpu_is_one_line(tmp_path, tiny_folder, monkeypatch):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    with pytest.raises(ExploreError, match="no CUDA GPU is visible; use device: cpu"):
        run_sweep(sweep_config(tiny_folder, tmp_path, device="cuda"), progress=False)


@pytest.mark.gpu
def test_sweep_on_cuda_in_bf16_with_nf4_and_qlora(tmp_path, tiny_folder):
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    config = sweep_config(
        tiny_folder, tmp_path / "out", device="cuda", dtype="bfloat16", grid=None,
        recovery={"qlora": {"method": "qlora", "components": ["lm"], "steps": 2, "batch_size": 4, "warmup_steps": 0}},
        points=[{"name": "nf4", "compress": {"precision": "nf4"}},
                {"name": "q3+qlora", "compress": {"queries": {"keep": 3}}, "recover": "qlora"}],
    )  # fmt: skip
    run_sweep(config, progress=False)
    results = read_results(tmp_path / "out" / RESULTS)
    assert list(results) == ["original", "nf4", "q3+qlora"]
    assert results["nf4"]["cost"]["disk_bytes"] < results["original"]["cost"]["disk_bytes"]
