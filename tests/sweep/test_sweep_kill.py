"""``explore sweep`` killed for real (SIGKILL, in a forked child) at five durable writes the test picks among
an uninterrupted run's (model folders, the finished-model marker, predictions, results, report), then resumed:
the same results (all but the wall-clock timings), byte-identical predictions, summaries and model weights."""

import json
import shutil

import yaml

from explore.runs import read_jsonl

TIMINGS = ("seconds", "latency_b1_s", "latency_b2_s")  # wall-clock: differ between any two runs


def sweep_file(folder, out, path):
    raw = {
        "model": str(folder), "output_dir": str(out), "eval_batch_size": 2, "calibration_examples": 2,
        "tasks": [{"name": "world-vqa", "limit": 4}],
        "cost": {"latency_examples": 1, "batch_size": 2, "flops_examples": 1, "min_run_time": 0.01},
        "recovery": {"lora": {"method": "lora", "components": ["qformer"], "steps": 2, "batch_size": 2, "lr": 1e-3,
                              "warmup_steps": 0}},
        "points": [{"name": "q3+lora", "compress": {"queries": {"keep": 3, "strategy": "merge"}}, "recover": "lora"}],
    }  # fmt: skip
    path.write_text(yaml.safe_dump(raw))
    return path


def without_timings(value):
    if isinstance(value, dict):
        return {k: without_timings(v) for k, v in value.items() if k not in TIMINGS}
    if isinstance(value, list):
        return [without_timings(v) for v in value]
    return value


def outputs(out) -> dict:
    """What a sweep leaves: results and model notes (timings aside), and the bytes of every prediction, summary,
    header and weight file."""
    files = {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*"))
             if p.is_file() and p.suffix in (".jsonl", ".json", ".safetensors")
             and p.name not in ("results.jsonl", "run.json", "latency.json") and p.parent.name != "models"}  # fmt: skip
    notes = {p.name: without_timings(json.loads(p.read_text())) for p in sorted((out / "models").glob("*.json"))}
    results = [without_timings({k: v for k, v in record.items() if k != "model_dir"})
               for record in read_jsonl(out / "results.jsonl")]  # fmt: skip
    return {"results": results, "notes": notes, "files": files, "report": (out / "report.md").is_file()}


def test_sweep_killed_at_five_points_resumes_to_the_uninterrupted_results(forked_explore, tiny_folder, tmp_path):
    config = sweep_file(tiny_folder, tmp_path / "reference", tmp_path / "reference.yaml")
    reference = forked_explore("sweep", "--config", str(config))
    assert reference.code == 0, reference.log
    expected = outputs(tmp_path / "reference")
    assert [r["name"] for r in expected["results"]] == ["original", "q3+lora"] and expected["report"]
    assert any(name.endswith("model.safetensors") for name in expected["files"])
    for point in forked_explore.kill_points(reference.events["fsync"]):
        out = tmp_path / f"killed-at-{point}"
        config = sweep_file(tiny_folder, out, tmp_path / f"killed-at-{point}.yaml")
        killed = forked_explore("sweep", "--config", str(config), event="fsync", kill_at=point)
        assert killed.killed, f"fsync {point}: {killed.log}"
        resumed = forked_explore("sweep", "--config", str(config))
        assert resumed.code == 0, resumed.log
        assert outputs(out) == expected, f"killed at fsync {point}"

    # the case: a finished-model marker cut by a kill (an explore before the atomic marker could leave
    # one) raised a JSON error on every rerun; now the model is made again and the sweep ends as the reference
    out = tmp_path / "cut-marker"
    shutil.copytree(tmp_path / "reference", out)
    for marker in (out / "models").glob("*.json"):
        marker.write_text(marker.read_text()[:20])
    (out / "results.jsonl").unlink()
    config = sweep_file(tiny_folder, out, tmp_path / "cut-marker.yaml")
    resumed = forked_explore("sweep", "--config", str(config))
    assert resumed.code == 0, resumed.log
    assert outputs(out) == expected


def test_sweep_resumed_with_another_model_or_seed_is_refused(forked_explore, tiny_folder, tmp_path):
    out = tmp_path / "out"
    (out / "results.jsonl").parent.mkdir()
    (out / "results.jsonl").write_text('{"name": "original"}\n')  # from an explore that wrote no header
    path = sweep_file(tiny_folder, out, tmp_path / "sweep.yaml")
    r = forked_explore("sweep", "--config", str(path))
    assert r.code == 2
    assert r.log.strip() == (f"error: {out} holds outputs but no header.json, so nothing says which model, task or "
                             "judge wrote them; use a new output_dir folder")
    (out / "header.json").write_text('{"command": "sweep", "dtype": "float32", "model": "embedded", "seed": 0}')
    r = forked_explore("sweep", "--config", str(path))
    assert r.code == 2 and r.log.strip().startswith(f"error: {out} was written with model = 'embedded', but this run "
                                                    f"has model = '{tiny_folder}'")  # fmt: skip
    assert (out / "results.jsonl").read_text() == '{"name": "original"}\n'
