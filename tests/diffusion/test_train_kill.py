"""``explore diffusion train`` killed for real (SIGKILL, in a forked child) at five durable writes the test
picks among an uninterrupted run's (run info, training log, validation grids, checkpoints, the final
pipeline) and at an optimizer update, then continued as a user would (``--resume latest`` when a checkpoint
exists, else the same command again): the final pipeline's weights are bit-identical to the uninterrupted run's,
and the training log holds every step once, as the uninterrupted run's does (timings aside)."""

from pathlib import Path

import yaml

from explore.runs import read_jsonl

TINY = Path(__file__).resolve().parents[2] / "configs" / "diffusion" / "tiny.yaml"


def config_file(folder: Path, name: str) -> tuple[Path, Path]:
    raw = yaml.safe_load(TINY.read_text())
    raw["output_dir"] = str(folder / name)
    raw["validation"]["every"] = 1000  # only at the end
    raw["loss"]["perceptual_weight"] = 0.0  # no feature network to load in every run
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path, folder / name


def weights(run: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted((run / "pipeline").rglob("*.safetensors"))}


def log(run: Path) -> list[dict]:
    """The training log without its wall-clock rate."""
    return [{k: v for k, v in record.items() if k != "steps_per_s"} for record in read_jsonl(run / "train_log.jsonl")]


def test_diffusion_train_killed_at_six_points_resumes_to_bit_identical_weights(forked_explore, tmp_path):
    path, run = config_file(tmp_path, "reference")
    reference = forked_explore("diffusion", "train", "--config", str(path))
    assert reference.code == 0, reference.log
    expected, expected_log = weights(run), log(run)
    assert len(expected) >= 2  # the UNet and the text encoder
    assert reference.events["step"] == 4
    points = [("fsync", k) for k in forked_explore.kill_points(reference.events["fsync"])] + [("step", 3)]
    for event, point in points:
        path, run = config_file(tmp_path, f"killed-at-{event}-{point}")
        killed = forked_explore("diffusion", "train", "--config", str(path), event=event, kill_at=point)
        assert killed.killed, f"{event} {point}: {killed.log}"
        has_checkpoint = any((run / "checkpoints").glob("step-*/trainer_state.json"))
        again = ["--resume", "latest"] if has_checkpoint else []
        resumed = forked_explore("diffusion", "train", "--config", str(path), *again)
        assert resumed.code == 0, resumed.log
        assert weights(run) == expected, f"killed at {event} {point}"
        assert log(run) == expected_log, f"killed at {event} {point}"  # every step logged once
