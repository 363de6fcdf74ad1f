"""The sweep config: which model, which compression × recovery points, which tasks, which costs.

A sweep is a list of named points. Each point is a compression recipe (query tokens, dropped
layers, image resolution, weight precision) and a recovery recipe (a named fine-tuning config, or
none). Points come from ``points:`` (an explicit list), from ``grid:`` (every compression recipe
× every recovery recipe), or both. The original model is always evaluated first as ``original``;
every retention is measured against it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from explore.adapt.config import FinetuneConfig
from explore.compress.precision import PRECISIONS
from explore.compress.queries import QUERY_STRATEGIES
from explore.config import StrictModel, load_yaml_config

ORIGINAL = "original"  # the uncompressed, unrecovered point every retention is measured against
NO_RECOVERY = "none"
SWEEP_TASKS: tuple[str, ...] = ("world-vqa", "world-judge", "world-caption", "vl-rewardbench", "vqav2", "coco-captions")


class QueriesSection(StrictModel):
    keep: int = Field(gt=0, description="query tokens kept (InstructBLIP: 32; shapes-small: 16)")
    strategy: str = Field("even", description=f"which ones: {', '.join(QUERY_STRATEGIES)}")

    @field_validator("strategy")
    @classmethod
    def _known_strategy(cls, value: str) -> str:
        if value not in QUERY_STRATEGIES:
            raise ValueError(f"unknown strategy {value!r}; choose one of {list(QUERY_STRATEGIES)}")
        return value


class DepthSection(StrictModel):
    component: Literal["vision", "qformer", "lm_encoder", "lm_decoder"] = Field(
        description="whose blocks to drop (lm_encoder / lm_decoder: T5 encoder / decoder; LLaMA: lm_decoder)"
    )
    drop: int | list[int] = Field(description="how many blocks to drop (chosen by `by`), or their positions")
    by: Literal["influence", "last"] = Field(
        "influence",
        description="with a count: lowest ShortGPT block influence on a calibration batch, or the last ones",
    )


class WidthSection(StrictModel):
    component: Literal["vision", "qformer", "lm"] = Field(
        description="whose layers to narrow (lm: T5 encoder and decoder together, or the LLaMA decoder)"
    )
    ffn_keep: float = Field(1.0, gt=0, le=1, description="fraction of FFN channels kept per layer (by importance)")
    heads_keep: float = Field(1.0, gt=0, le=1, description="fraction of attention heads kept per layer (lm only)")


class FastVSection(StrictModel):
    ratio: float = Field(gt=0, lt=1, description="fraction of the image tokens dropped inside the LM")
    layer: int = Field(ge=0, description="LM layer after which they are dropped (T5: encoder block)")


class CompressSection(StrictModel):
    queries: QueriesSection | None = Field(None, description="fewer query tokens")
    depth: list[DepthSection] = Field(default_factory=list, description="blocks to drop, per component")
    width: list[WidthSection] = Field(default_factory=list, description="heads / FFN channels to prune, per component")
    fastv: FastVSection | None = Field(None, description="FastV: image tokens dropped inside the LM (applied last)")
    resolution: int | None = Field(None, gt=0, description="input image side in pixels (a multiple of the patch)")
    precision: str = Field("fp32", description=f"weights: {', '.join(PRECISIONS)}")

    @field_validator("precision")
    @classmethod
    def _known_precision(cls, value: str) -> str:
        if value not in PRECISIONS:
            raise ValueError(f"unknown precision {value!r}; choose one of {list(PRECISIONS)}")
        return value

    def describe(self) -> str:
        """A short human label, e.g. ``q8-even · lm_decoder-1 · 48px · int8``."""
        parts = []
        if self.queries:
            parts.append(f"q{self.queries.keep}-{self.queries.strategy}")
        for depth in self.depth:
            drop = depth.drop if isinstance(depth.drop, int) else f"[{','.join(map(str, depth.drop))}]"
            parts.append(f"{depth.component}-{drop}")
        for width in self.width:
            kept = [f"{name}{round(keep * 100)}%" for name, keep in (("ffn", width.ffn_keep), ("heads", width.heads_keep))
                    if keep != 1]  # fmt: skip
            parts.append(f"{width.component}-{'-'.join(kept) or 'full'}")
        if self.fastv:
            parts.append(f"fastv{round(self.fastv.ratio * 100)}%@{self.fastv.layer}")
        if self.resolution:
            parts.append(f"{self.resolution}px")
        if self.precision != "fp32":
            parts.append(self.precision)
        return " · ".join(parts) or "uncompressed"


class PointSection(StrictModel):
    name: str = Field(description="unique point name (a folder name: letters, digits, - _ .)")
    compress: CompressSection = Field(default_factory=CompressSection, description="the compression recipe")
    recover: str = Field(NO_RECOVERY, description="a name from `recovery:`, or 'none'")

    @field_validator("name")
    @classmethod
    def _folder_name(cls, value: str) -> str:
        if not value or not all(c.isalnum() or c in "-_.+" for c in value) or value.startswith("."):
            raise ValueError(f"point name {value!r} must be letters, digits, '-', '_', '+' or '.'")
        return value

    def _recipe(self, **exclude) -> dict:
        """The compression recipe as hashed: width / fastv left out while unused, so that the hashes of points
        written before those operators existed stay the same (their sweeps resume)."""
        unused = {name for name in ("width", "fastv") if not getattr(self.compress, name)}
        return self.compress.model_dump(exclude=unused | set(exclude))

    def model_key(self, recovery: FinetuneConfig | None) -> str:
        """A hash of what decides the fp32 model before precision (shared by precision variants)."""
        spec = {"compress": self._recipe(precision=True),
                "recover": recovery.model_dump() if recovery else None}  # fmt: skip
        return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]

    def fingerprint(self, recovery: FinetuneConfig | None) -> str:
        """A hash of everything that decides this point's model (to refuse resuming a changed point)."""
        spec = {"compress": self._recipe(), "recover": recovery.model_dump() if recovery else None}
        return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


class GridSection(StrictModel):
    compress: dict[str, CompressSection] = Field(description="named compression recipes")
    recover: list[str] = Field(default_factory=lambda: [NO_RECOVERY], description="recovery names to cross with")


class TaskSection(StrictModel):
    name: str = Field(description=f"task: {', '.join(SWEEP_TASKS)}")
    limit: int = Field(300, gt=0, description="examples evaluated per point")
    split: str = Field("test", description="shapes-world split (world-* tasks)")
    data: str | None = Field(None, description="data file / hub id for non-world tasks (see `explore eval`)")
    annotations: str | None = Field(None, description="VQAv2 annotations JSON")
    images: str | None = Field(None, description="image folder (VQAv2, COCO)")

    @field_validator("name")
    @classmethod
    def _known_task(cls, value: str) -> str:
        if value not in SWEEP_TASKS:
            raise ValueError(f"unknown task {value!r}; choose one of {list(SWEEP_TASKS)}")
        return value


class CostSection(StrictModel):
    latency_examples: int = Field(32, gt=0, description="examples timed for latency (world VQA questions)")
    batch_size: int = Field(32, gt=0, description="batch size of the batched latency (batch 1 is always timed)")
    flops_examples: int = Field(8, gt=0, description="examples in the FLOP count")
    min_run_time: float = Field(1.0, gt=0, description="latency: seconds of timed passes per point, batch size and "
                                "round (torch.utils.benchmark's blocked_autorange; at least one pass)")
    rounds: int = Field(3, gt=0, description="latency: rounds of the interleaved pass over all points at the end "
                        "of the sweep (each round times every point once; the median round is kept)")


class ResourcesSection(StrictModel):
    cpus: int = Field(1, gt=0, description="CPU cores one point asks of a Ray cluster (also its torch threads)")
    gpus: float = Field(0, ge=0, description="GPUs one point asks of a Ray cluster (device: cuda needs > 0)")


class SweepConfig(StrictModel):
    model: str = Field("embedded", description="the original model: 'embedded', a folder or a hub id")
    output_dir: str = Field("runs/sweep", description="results.jsonl, point folders and the report go here")
    device: Literal["cpu", "cuda"] = Field("cpu", description="where models are compressed, tuned and evaluated")
    dtype: Literal["float32", "bfloat16", "float16"] = Field(
        "float32", description="weights of the original and the compressed models (bf16/fp16 for real models on a GPU)"
    )
    seed: int = Field(0, ge=0, description="world seed of evaluation, calibration and recovery data")
    target_retention: float = Field(0.7, gt=0, le=1, description="retention every task must keep")
    aim_retention: float = Field(0.9, gt=0, le=1, description="the stretch goal shown in the report")
    eval_batch_size: int = Field(64, gt=0, description="evaluation batch size")
    calibration_examples: int = Field(64, gt=0, description="validation examples for block influence")
    keep_models: bool = Field(True, description="keep the compressed models after the sweep (else only results)")
    tasks: list[TaskSection] = Field(min_length=1, description="tasks evaluated at every point")
    cost: CostSection = Field(default_factory=CostSection, description="how cost is measured")
    resources: ResourcesSection = Field(default_factory=ResourcesSection,
                                        description="what one point asks of a Ray cluster (`--backend ray`)")
    recovery: dict[str, FinetuneConfig] = Field(default_factory=dict, description="named recovery recipes")
    points: list[PointSection] = Field(default_factory=list, description="explicit points")
    grid: GridSection | None = Field(None, description="compression recipes × recovery names")

    @model_validator(mode="after")
    def _consistent(self) -> SweepConfig:
        names = [task.name for task in self.tasks]
        if len(set(names)) != len(names):
            raise ValueError(f"tasks: each task once, got {names}")
        if NO_RECOVERY in self.recovery:
            raise ValueError(f"recovery: {NO_RECOVERY!r} is reserved for no recovery")
        for point in self.all_points():
            if point.recover != NO_RECOVERY and point.recover not in self.recovery:
                raise ValueError(f"point {point.name!r}: unknown recovery {point.recover!r}; "
                                 f"define it under `recovery:` or use one of {[NO_RECOVERY, *self.recovery]}")  # fmt: skip
        seen: set[str] = set()
        for point in self.all_points():
            if point.name in seen:
                raise ValueError(f"two points are called {point.name!r}; names must be unique")
            seen.add(point.name)
        return self

    def all_points(self) -> list[PointSection]:
        """``original`` first, then the explicit points, then the grid (``<recipe>+<recovery>``)."""
        points = [PointSection(name=ORIGINAL)]
        points += [p for p in self.points if p.name != ORIGINAL]
        if self.grid:
            for recipe, compress in self.grid.compress.items():
                for recover in self.grid.recover:
                    name = recipe if recover == NO_RECOVERY else f"{recipe}+{recover}"
                    points.append(PointSection(name=name, compress=compress, recover=recover))
        return points

    def recovery_for(self, point: PointSection) -> FinetuneConfig | None:
        """The fine-tuning config of ``point`` (None: no recovery)."""
        return None if point.recover == NO_RECOVERY else self.recovery[point.recover]


def load_sweep_config(path: str | Path) -> SweepConfig:
    """Load and validate a sweep YAML (ConfigError with one line naming the key on any problem)."""
    return load_yaml_config(SweepConfig, path)


def default_config_path() -> Path:
    """The packaged default sweep: the embedded model, ≤ 15 minutes on 2 CPU cores."""
    return Path(__file__).resolve().parent.parent / "configs" / "sweep" / "default.yaml"
