"""The sweep report: a table of scores, retention and cost per point, Pareto plots, and the answer.

Retention is measured against the ``original`` point: a plain ratio for VQA accuracy and CIDEr-D,
and the share of above-chance accuracy for a pairwise judge (50% is a coin flip; see
:mod:`explore.eval.metrics.retention`). A point *meets the target* when its lowest retention over
all tasks reaches ``target_retention``. The report names the cheapest such point — by FLOPs per
example, which do not depend on what else the machine is doing (latency does), then by
non-embedding parameters — with the command that reproduces it.
"""

from __future__ import annotations

import html
import shlex
import sys
from pathlib import Path

from explore.eval.metrics.retention import chance_corrected_retention, retention
from explore.eval.tasks import get_task
from explore.runs import atomic_path, write_text
from explore.sweep.config import ORIGINAL, SweepConfig

TASK_LABELS = {"world-vqa": "VQA acc", "world-judge": "judge acc", "world-caption": "CIDEr-D",
               "vl-rewardbench": "VL-RB acc", "vqav2": "VQAv2 acc", "coco-captions": "COCO CIDEr-D"}  # fmt: skip


def task_retention(task: str, score: float, original: float) -> float | None:
    """Retention of one task's score (chance-corrected for judges); None when the original scored
    0 (or, for a judge, no better than chance): there is nothing to retain."""
    if get_task(task).kind == "judge":
        return chance_corrected_retention(score, original) if original > 0.5 else None
    return retention(score, original) if original > 0 else None


def analyse(config: SweepConfig, results: dict[str, dict], order: list[str]) -> list[dict]:
    """One row per finished point (in ``order``) with retention and cost ratios added."""
    if ORIGINAL not in results:
        return []
    base = results[ORIGINAL]
    batched = f"latency_b{config.cost.batch_size}_s"
    rows = []
    for name in order:
        if name not in results:
            continue
        record = results[name]
        tasks = list(record["scores"])
        kept = {t: task_retention(t, record["scores"][t], base["scores"][t]) for t in tasks}
        lowest = None if None in kept.values() else min(kept.values())
        cost, base_cost = record["cost"], base["cost"]
        rows.append({
            **record,
            "retention": kept,
            "min_retention": lowest,
            "params_ratio": cost["params_non_embedding"] / base_cost["params_non_embedding"],
            "disk_ratio": cost["disk_bytes"] / base_cost["disk_bytes"],
            "flops_ratio": cost["flops_per_example"] / base_cost["flops_per_example"],
            "speedup_b1": base_cost["latency_b1_s"] / cost["latency_b1_s"],
            "speedup_batched": base_cost[batched] / cost[batched],
            "meets_target": lowest is not None and lowest >= config.target_retention,
            "meets_aim": lowest is not None and lowest >= config.aim_retention
            and (cost["params_non_embedding"] / base_cost["params_non_embedding"] <= 0.25
                 or max(base_cost["latency_b1_s"] / cost["latency_b1_s"], base_cost[batched] / cost[batched]) >= 3.0),
        })  # fmt: skip
    return rows


def cheapest(rows: list[dict]) -> dict | None:
    """The compressed point that meets the target with the fewest FLOPs per example (ties: fewer parameters)."""
    candidates = [r for r in rows if r["meets_target"] and r["name"] != ORIGINAL]
    return min(candidates, key=lambda r: (r["cost"]["flops_per_example"], r["params_ratio"]), default=None)


def pareto(rows: list[dict], cost_key) -> list[dict]:
    """Points not dominated in (lower cost, higher min retention), sorted by cost."""
    front = []
    rows = [r for r in rows if r["min_retention"] is not None]
    for row in sorted(rows, key=lambda r: (cost_key(r), -r["min_retention"])):
        if not front or row["min_retention"] > front[-1]["min_retention"]:
            front.append(row)
    return front


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0%}"


def _fmt_bytes(n: float) -> str:
    return f"{n / 2**20:.1f} MiB"


def _table(config: SweepConfig, rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    tasks = [t.name for t in config.tasks]
    header = (["point", "compression", "recovery"] + [TASK_LABELS.get(t, t) for t in tasks]
              + [f"kept {TASK_LABELS.get(t, t)}" for t in tasks]
              + ["min kept", "non-emb params", "disk", "FLOPs/ex", "ms/ex b1", f"ms/ex b{config.cost.batch_size}",
                 "peak mem"])  # fmt: skip
    body = []
    for r in rows:
        cost = r["cost"]
        mark = " ✅" if r["meets_target"] else ""
        body.append(
            [r["name"], r["label"], r["recover"]]
            + [f"{r['scores'][t]:.3f}" for t in tasks]
            + [_pct(r["retention"][t]) for t in tasks]
            + [f"{_pct(r['min_retention'])}{mark}",
               f"{cost['params_non_embedding'] / 1e6:.2f} M ({r['params_ratio']:.0%})",
               f"{_fmt_bytes(cost['disk_bytes'])} ({r['disk_ratio']:.0%})",
               f"{cost['flops_per_example'] / 1e6:.1f} M ({r['flops_ratio']:.0%})",
               f"{cost['latency_b1_s'] * 1e3:.1f} ({r['speedup_b1']:.2f}×)",
               f"{cost[f'latency_b{config.cost.batch_size}_s'] * 1e3:.2f} ({r['speedup_batched']:.2f}×)",
               _fmt_bytes(cost["peak_memory_bytes"])]
        )  # fmt: skip
    return header, body


def plot(rows: list[dict], config: SweepConfig, out: Path) -> list[Path]:
    """Two PNGs: min retention against batch-1 latency and against non-embedding parameters."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    batched = f"latency_b{config.cost.batch_size}_s"  # batch 1 is dominated by per-token overhead on tiny models
    for filename, title, key, xlabel in (
        ("pareto_latency.png", "retention vs CPU latency", lambda r: r["cost"][batched] * 1e3,
         f"CPU latency per example at batch {config.cost.batch_size} (ms)"),
        ("pareto_params.png", "retention vs parameters", lambda r: r["cost"]["params_non_embedding"] / 1e6,
         "non-embedding parameters (M)"),
    ):  # fmt: skip
        fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
        for row in [r for r in rows if r["min_retention"] is not None]:
            colour = "black" if row["name"] == ORIGINAL else ("tab:green" if row["meets_target"] else "tab:red")
            ax.scatter(key(row), row["min_retention"] * 100, color=colour, s=28, zorder=3)
            ax.annotate(row["name"], (key(row), row["min_retention"] * 100), fontsize=7, xytext=(4, 3),
                        textcoords="offset points")  # fmt: skip
        front = pareto(rows, key)
        ax.plot([key(r) for r in front], [r["min_retention"] * 100 for r in front], color="tab:blue", lw=1,
                label="Pareto front", zorder=2)  # fmt: skip
        ax.axhline(config.target_retention * 100, color="tab:orange", ls="--", lw=1,
                   label=f"target {config.target_retention:.0%}")  # fmt: skip
        ax.axhline(config.aim_retention * 100, color="tab:gray", ls=":", lw=1, label=f"aim {config.aim_retention:.0%}")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("lowest retention over tasks (%)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
        fig.tight_layout()
        path = out / filename
        with atomic_path(path) as tmp:  # same suffix: matplotlib picks PNG by it
            fig.savefig(tmp)
        plt.close(fig)
        paths.append(path)
    return paths


def _command(config_path: str | None, name: str) -> str:
    config = f" --config {shlex.quote(config_path)}" if config_path else ""
    return f"explore sweep{config} --only {shlex.quote(name)}"


def slower_despite_fewer_flops(rows: list[dict]) -> list[dict]:
    """Compressed points with fewer FLOPs per example than the original that are slower batched."""
    return [r for r in rows if r["name"] != ORIGINAL and r["flops_ratio"] < 1 and r["speedup_batched"] < 1]


def _failed_lines(failures: dict[str, dict]) -> list[str]:
    if not failures:
        return []
    lines = ["## Failed points", "", "These points raised; the others went on. Run the sweep again to retry them "
             "(tracebacks in `failed.json`).", ""]  # fmt: skip
    lines += [f"- `{name}`: {failure['error']}" for name, failure in failures.items()]
    return [*lines, ""]


def write_report(config: SweepConfig, results: dict[str, dict], out: Path, order: list[str],
                 config_path: str | None = None, *, failures: dict[str, dict] | None = None,
                 latency_method: str | None = None) -> Path:  # fmt: skip
    """Write report.md, report.html and the plots to ``out``; return the Markdown path.

    ``failures``: points that raised (name → {"error", ...}), listed in their own section; ``latency_method``:
    how the latency was measured, in words (the sweep's interleaved pass)."""
    failures = failures or {}
    lines = [f"# Sweep report: {config.model}", ""]
    if any("latency_b1_s" not in results[name]["cost"] for name in order if name in results):
        # finished points whose latency pass has not run yet (a sweep killed before its end)
        lines += ["The points are evaluated but their latency has not been measured yet (it is measured for all "
                  "points side by side at the end of the sweep); run the sweep again to finish.", ""]  # fmt: skip
        rows = []
    else:
        rows = analyse(config, results, order)
    if not rows and len(lines) == 2:
        lines += ["No results yet: the original model has not been evaluated.", ""]
    if not rows:
        lines += _failed_lines(failures)
        write_text(out / "report.md", "\n".join(lines) + "\n")
        return out / "report.md"
    plots = plot(rows, config, out)
    header, body = _table(config, rows)
    best = cheapest(rows)
    aims = [r for r in rows if r["meets_aim"] and r["name"] != ORIGINAL]
    tasks = ", ".join(f"{t.name} ({t.limit} examples, {t.split})" for t in config.tasks)
    lines += [
        (
            f"Tasks: {tasks}. Retention is against `original` (judge: share of above-chance accuracy kept). "
            f"Target: every task ≥ {config.target_retention:.0%}; aim: ≥ {config.aim_retention:.0%} with ≤ 25% of the "
            "non-embedding parameters or ≥ 3× lower latency (batch 1 or batched). Cost ratios in brackets are against `original`. "
            + (f"{latency_method[0].upper()}{latency_method[1:]}, on this machine ({config.device})."
               if latency_method else "latency per example on this machine.")
        ),
        "",
        "## Answer",
        "",
    ]
    if best:
        lines += [
            (
                f"**Cheapest configuration (fewest FLOPs) meeting the {config.target_retention:.0%} target: `{best['name']}`** "
                f"({best['label']}, recovery {best['recover']}): lowest retention {best['min_retention']:.0%}, "
                f"{best['flops_ratio']:.0%} of the FLOPs per example, "
                f"{best['speedup_b1']:.2f}× faster at batch 1, {best['speedup_batched']:.2f}× batched, "
                f"{best['params_ratio']:.0%} of the non-embedding parameters, {best['disk_ratio']:.0%} of the bytes on disk."
            ),
            "",
            f"Reproduce: `{_command(config_path, best['name'])}`",
            "",
        ]
    else:
        lines += [f"No compressed configuration kept ≥ {config.target_retention:.0%} on every task.", ""]
    if aims:
        lines += ["Meeting the aim: " + ", ".join(f"`{r['name']}` ({r['min_retention']:.0%})" for r in aims), ""]
    else:
        lines += [(f"No configuration reached the aim (≥ {config.aim_retention:.0%} with ≤ 25% parameters or ≥ 3× "
                  "lower latency)."), ""]  # fmt: skip
    lines += ["## Results", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, cells in zip([r["name"] for r in rows], body):
        bold = best is not None and name == best["name"]
        lines.append("| " + " | ".join(f"**{c}**" if bold else c for c in cells) + " |")
    lines += ["", f"Reproduce one point (it evaluates `original` too): `{_command(config_path, '<name>')}`", ""]
    slower = slower_despite_fewer_flops(rows)
    if slower:
        lines += [("Slower batched than `original` despite fewer FLOPs: "
                   + ", ".join(f"`{r['name']}` ({r['flops_ratio']:.0%} of the FLOPs, {r['speedup_batched']:.2f}×)"
                               for r in slower)
                   + ". They were timed beside `original` in the same rounds, so contention on the machine does not "
                   "explain it; note that FLOPs count one teacher-forced forward pass while latency times "
                   "generation (up to 10 new tokens per answer)."), ""]  # fmt: skip
    else:
        lines += ["Every compressed point with fewer FLOPs than `original` is at least as fast batched.", ""]
    lines += _failed_lines(failures)
    lines += [*[f"![{p.stem}]({p.name})" for p in plots], ""]
    dropped = [(r["name"], r["dropped"]) for r in rows if r["dropped"]]
    if dropped:
        lines += ["## Blocks dropped", ""]
        lines += [f"- `{name}`: " + "; ".join(f"{c} {pos}" for c, pos in d.items()) for name, d in dropped]
        lines.append("")
    lines += ["Generated by: `" + " ".join(shlex.quote(a) for a in ["explore", *sys.argv[1:]]) + "`", ""]
    markdown = "\n".join(lines)
    write_text(out / "report.md", markdown)
    _write_html(out / "report.html", config, header, body, rows, best, plots, markdown)
    return out / "report.md"


def _write_html(path: Path, config: SweepConfig, header, body, rows, best, plots, markdown: str) -> None:
    """The same report as one self-contained-enough HTML page (the PNGs sit next to it)."""
    answer = markdown.split("## Answer", 1)[1].split("## Results", 1)[0].strip()
    paragraphs = "".join(f"<p>{html.escape(p.strip())}</p>" for p in answer.split("\n\n") if p.strip())
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    trs = []
    for row, cells in zip(rows, body):
        style = ' class="best"' if best is not None and row["name"] == best["name"] else ""
        trs.append(f"<tr{style}>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
    images = "".join(f'<img src="{html.escape(p.name)}" alt="{html.escape(p.stem)}">' for p in plots)
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>explore sweep: {html.escape(config.model)}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1400px}}table{{border-collapse:collapse;font-size:13px}}
td,th{{border:1px solid #ccc;padding:3px 6px;text-align:right}}td:first-child,td:nth-child(2){{text-align:left}}
tr.best{{background:#e6ffe6;font-weight:bold}}img{{max-width:48%;margin:1em 1% 0 0}}</style></head>
<body><h1>Sweep report: {html.escape(config.model)}</h1>{paragraphs}
<table><tr>{head}</tr>{"".join(trs)}</table>{images}</body></html>
"""
    write_text(path, page)
