"""The Sweep tab: a sweep folder read back — the results table, the Pareto plots, the answer — and the
model folder of each point, so that a point can be loaded into the Ask tab.

Everything is read with the sweep's own functions (:func:`explore.sweep.report.analyse`,
:func:`~explore.sweep.report.cheapest`, :func:`~explore.sweep.report.plot`); the folder is never written:
plots missing from it are drawn into a temporary folder.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from explore.errors import ExploreError
from explore.sweep.config import ORIGINAL, SweepConfig, default_config_path, load_sweep_config
from explore.sweep.report import TASK_LABELS, analyse, cheapest, plot
from explore.sweep.run import RESULTS, read_results

PLOTS = ("pareto_latency.png", "pareto_params.png")


@dataclass
class SweepView:
    """A sweep folder as the page shows it."""

    folder: Path
    header: list[str]
    rows: list[list[str]]  # one per finished point, in the config's order
    answer: str  # Markdown: the report's answer (or one computed from the results)
    plots: list[Path]
    models: dict[str, Path | None] = field(default_factory=dict)  # point → its model folder (None: not kept)
    notes: list[str] = field(default_factory=list)


def point_model_folder(folder: Path, model_dir: str | None) -> Path | None:
    """Where a point's model is now: the recorded ``model_dir`` if it exists (absolute, or relative to the
    current folder), else the same ``models/…`` or ``points/…`` path inside ``folder`` (a sweep folder that was
    moved or copied); None when it is in neither place (``keep_models: false``, or deleted)."""
    if not model_dir:
        return None
    recorded = Path(model_dir).expanduser()
    if (recorded / "config.json").is_file():
        return recorded.resolve()
    parts = recorded.parts
    for marker in ("points", "models"):
        if marker in parts:
            inside = folder.joinpath(*parts[len(parts) - 1 - parts[::-1].index(marker) :])
            if (inside / "config.json").is_file():
                return inside.resolve()
    return None


def _config(folder: Path, notes: list[str]) -> SweepConfig:
    if (folder / "config.yaml").is_file():
        return load_sweep_config(folder / "config.yaml")
    notes.append(f"{folder} has no config.yaml (written by `explore sweep` at its start); the default sweep "
                 "config's targets and batch size are used to read it")  # fmt: skip
    return load_sweep_config(default_config_path())


def _answer(folder: Path, rows: list[dict], config: SweepConfig) -> str:
    report = folder / "report.md"
    if report.is_file():
        text = report.read_text(encoding="utf-8")
        if "## Answer" in text:
            return text.split("## Answer", 1)[1].split("\n## ", 1)[0].strip()
    best = cheapest(rows)
    if best is None:
        return f"No compressed configuration kept ≥ {config.target_retention:.0%} on every task."
    return (f"**Cheapest configuration (fewest FLOPs) meeting the {config.target_retention:.0%} target: "
            f"`{best['name']}`** ({best['label']}, recovery {best['recover']}): lowest retention "
            f"{best['min_retention']:.0%}, {best['flops_ratio']:.0%} of the FLOPs per example.")  # fmt: skip


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0%}"


def open_sweep(folder: str | Path) -> SweepView:
    """Read a sweep output folder (``results.jsonl``, and ``config.yaml`` / ``report.md`` / plots when there).

    Raises:
        ExploreError: no such folder, no ``results.jsonl`` in it, or a bad ``config.yaml``.
    """
    if not str(folder).strip():
        raise ExploreError("no sweep folder: give the output_dir of an `explore sweep` run")
    folder = Path(str(folder).strip()).expanduser()
    if not folder.is_dir():
        raise ExploreError(f"{folder}: no such folder; give the output_dir of an `explore sweep` run")
    if not (folder / RESULTS).is_file():
        raise ExploreError(f"{folder}: no {RESULTS}; is it a sweep's output_dir, and has its first point finished?")
    notes: list[str] = []
    config = _config(folder, notes)
    results = read_results(folder / RESULTS)
    if not results:
        raise ExploreError(f"{folder / RESULTS} holds no finished point yet; open it again when one has finished")
    names = [p.name for p in config.all_points()]
    order = names + [name for name in results if name not in names]
    models = {name: point_model_folder(folder, results[name].get("model_dir")) for name in order if name in results}
    tasks = list(results[next(iter(results))]["scores"])
    timed = all("latency_b1_s" in record.get("cost", {}) for record in results.values())
    if ORIGINAL not in results or not timed:
        notes.append("retention and cost need the original point and the latency pass at the end of the sweep; "
                     "only the scores are shown")  # fmt: skip
        header = ["point", "compression", "recovery", *[TASK_LABELS.get(t, t) for t in tasks], "model folder"]
        rows = [[name, results[name]["label"], results[name]["recover"],
                 *[f"{results[name]['scores'][t]:.3f}" for t in tasks],
                 str(models[name]) if models[name] else "not kept"] for name in order if name in results]  # fmt: skip
        return SweepView(folder, header, rows, "The sweep has not finished: no answer yet.", [], models, notes)
    analysed = analyse(config, results, order)
    header = ["point", "compression", "recovery", *[TASK_LABELS.get(t, t) for t in tasks], "min kept", "target",
              "FLOPs", "non-emb params", "speed-up b1", "model folder"]  # fmt: skip
    rows = [[r["name"], r["label"], r["recover"], *[f"{r['scores'][t]:.3f}" for t in tasks],
             _pct(r["min_retention"]), "yes" if r["meets_target"] else "no", _pct(r["flops_ratio"]),
             _pct(r["params_ratio"]), f"{r['speedup_b1']:.2f}×",
             str(models[r["name"]]) if models[r["name"]] else "not kept"] for r in analysed]  # fmt: skip
    plots = [folder / name for name in PLOTS]
    if not all(path.is_file() for path in plots):
        plots = plot(analysed, config, Path(tempfile.mkdtemp(prefix="explore-serve-plots-")))
    return SweepView(folder, header, rows, _answer(folder, analysed, config), plots, models, notes)


def point_model(view: SweepView, name: str) -> Path:
    """The model folder of point ``name``, to load into the Ask tab.

    Raises:
        ExploreError: an unknown point, or a point whose model folder is not there.
    """
    if name not in view.models:
        raise ExploreError(f"no point {name!r} in {view.folder}; points: {', '.join(view.models)}")
    if view.models[name] is None:
        raise ExploreError(f"the model of point {name!r} is not in {view.folder} (swept with keep_models: false, or "
                           "deleted); rerun the point with `explore sweep --only` to get it")  # fmt: skip
    return view.models[name]


def point_name(model_folder: str | Path) -> str | None:
    """The sweep point(s) whose model is ``model_folder`` (a ``models/<key>`` or ``points/<name>/model-<precision>``
    folder inside a sweep's output_dir), as "a" or "a / b"; None when it is no sweep's model."""
    folder = Path(str(model_folder).strip()).expanduser().resolve()
    if folder.parent.name == "models":
        sweep = folder.parent.parent
    elif folder.parent.parent.name == "points":
        sweep = folder.parent.parent.parent
    else:
        return None
    if not (sweep / RESULTS).is_file():
        return None
    names = [name for name, record in read_results(sweep / RESULTS).items()
             if point_model_folder(sweep, record.get("model_dir")) == folder]  # fmt: skip
    return " / ".join(names) or None
