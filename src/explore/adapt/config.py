"""The recovery fine-tuning config: method, components, schedule, data mix and distillation.

After compression, a short fine-tune wins quality back. ``method`` chooses how:

- ``lora`` / ``dora``: low-rank adapters (DoRA, arXiv 2402.09353, adds a learned magnitude) on
  every linear layer of the named components;
- ``ia3``: learned rescaling of keys, values and MLP activations (arXiv 2205.05638);
- ``qlora``: LoRA over a 4-bit NF4 copy of the adapted components (arXiv 2305.14314); CUDA only;
- ``full``: every weight of the named components. With ``[qformer, query_tokens, projection]``
  this is InstructBLIP's own instruction tuning (arXiv 2305.06500).

With ``distill_weight`` w > 0 the loss is ``(1 - w) * CE + w * T² * KL(teacher ‖ student)`` on
the answer tokens (Hinton et al., arXiv 1503.02531), the teacher being the uncompressed model;
``distill_hidden_weight`` h and ``distill_attention_weight`` a add ``h * hidden + a * attention``, the
layer-wise transfer of TinyBERT / MiniLM (see :mod:`explore.adapt.layerwise`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SerializerFunctionWrapHandler, field_validator, model_serializer, model_validator

from explore.adapt.targets import ADAPTER_COMPONENTS
from explore.config import StrictModel, load_yaml_config

METHODS: tuple[str, ...] = ("lora", "dora", "ia3", "qlora", "full")
FULL_COMPONENTS: tuple[str, ...] = ("vision", "qformer", "query_tokens", "projection", "lm")
TASKS: tuple[str, ...] = ("vqa", "caption", "judge")


class FinetuneConfig(StrictModel):
    """One recovery fine-tune. Every field has a default: ``{}`` is a LoRA on the Q-Former."""

    method: Literal["lora", "dora", "ia3", "qlora", "full"] = Field(
        "lora", description="lora, dora, ia3, qlora (4-bit base, CUDA only) or full (all weights of the components)"
    )
    components: list[str] = Field(
        ["qformer"], description=f"components to adapt: {list(ADAPTER_COMPONENTS)}; full also takes query_tokens"
    )
    steps: int = Field(100, gt=0, description="optimizer steps")
    batch_size: int = Field(16, gt=0, description="examples per optimizer step")
    lr: float = Field(1e-3, gt=0, description="peak learning rate (AdamW)")
    warmup_steps: int = Field(10, ge=0, description="linear warm-up steps from 0 to lr")
    schedule: Literal["constant", "linear", "cosine"] = Field("cosine", description="decay after warm-up (to 0)")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay on matrices (not biases / norms)")
    grad_clip: float = Field(1.0, gt=0, description="max global gradient norm")
    lora_r: int = Field(8, gt=0, description="LoRA / DoRA / QLoRA rank")
    lora_alpha: float = Field(16.0, gt=0, description="LoRA scaling numerator: the update is (alpha / r) · B A")
    lora_dropout: float = Field(0.0, ge=0, lt=1, description="dropout on the LoRA input")
    tasks: dict[str, float] = Field(
        {"vqa": 0.5, "caption": 0.3, "judge": 0.2}, description="task mix: vqa / caption / judge → sampling weight"
    )
    templates: bool = Field(True, description="wrap prompts in InstructBLIP's instruction templates")
    max_objects: int = Field(4, ge=1, le=9, description="most objects in a training scene")
    max_length: int = Field(48, ge=4, description="most tokens kept of a prompt or an answer")
    world_seed: int = Field(
        0, ge=0, description="base seed of the shapes world (keep the model's, so val / test stay unseen)"
    )
    data_start: int = Field(0, ge=0, description="index of the first training example in the world's train split")
    seed: int = Field(0, ge=0, description="seed of the adapter initialisation and of dropout")
    distill_weight: float = Field(0.0, ge=0, le=1, description="w of the KL term: (1-w)·CE + w·T²·KL; 0 = no teacher")
    distill_temperature: float = Field(2.0, gt=0, description="softmax temperature T of teacher and student in the KL")
    distill_hidden_weight: float = Field(0.0, ge=0, description="weight of the LM hidden-state transfer added to the "
                                         "loss (normalised MSE at text positions, TinyBERT's layer map); 0 = off")
    distill_attention_weight: float = Field(0.0, ge=0, description="weight of the LM attention transfer added to the "
                                            "loss (KL of head-averaged attention rows, MiniLM-style); 0 = off; "
                                            "runs both models with eager attention while training")
    # Left out of model_dump (exclude=True): it does not change the trained weights, so recipe
    # fingerprints (the sweep's resume check, a checkpoint's config check) stay the same whatever it is.
    checkpoint_every: int = Field(0, ge=0, exclude=True, description="save a resumable checkpoint every this many "
                                  "steps and at the end (0: never; the CLI writes them to <output>-checkpoints)")  # fmt: skip

    @field_validator("tasks")
    @classmethod
    def _known_tasks(cls, value: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(value) - set(TASKS))
        if unknown or not value or any(w < 0 for w in value.values()) or sum(value.values()) <= 0:
            raise ValueError(
                f"tasks must map {' / '.join(TASKS)} to non-negative weights with a positive sum; got {value}"
            )
        return value

    @model_validator(mode="after")
    def _consistent(self) -> FinetuneConfig:
        allowed = FULL_COMPONENTS if self.method == "full" else ADAPTER_COMPONENTS
        unknown = [c for c in self.components if c not in allowed]
        if unknown or not self.components or len(set(self.components)) != len(self.components):
            hint = "; query_tokens is a parameter, not a layer: train it with method full"
            raise ValueError(
                f"components {self.components} for method {self.method}: "
                f"choose distinct ones from {list(allowed)}{hint if 'query_tokens' in unknown else ''}"
            )
        if self.warmup_steps >= self.steps:
            raise ValueError(f"warmup_steps ({self.warmup_steps}) must be smaller than steps ({self.steps})")
        return self

    @model_serializer(mode="wrap")
    def _without_unused_layerwise(self, handler: SerializerFunctionWrapHandler) -> dict:
        """Leave the layer-wise weights out while they are 0, so that recipes and checkpoints written before
        they existed keep their hashes (a sweep or a fine-tune from then still resumes)."""
        values = handler(self)
        for name in ("distill_hidden_weight", "distill_attention_weight"):
            if values.get(name) == 0:
                del values[name]
        return values

    @property
    def needs_teacher(self) -> bool:
        """True when any distillation term (logit KL, hidden states, attention) is on."""
        return self.distill_weight > 0 or self.distill_hidden_weight > 0 or self.distill_attention_weight > 0

    @property
    def adapter(self) -> bool:
        """True for the peft methods (the result is a PeftModel), False for ``full``."""
        return self.method != "full"


def load_finetune_config(path: str | Path) -> FinetuneConfig:
    """Read and validate a fine-tuning YAML config (unknown keys are one-line :class:`ConfigError` s)."""
    return load_yaml_config(FinetuneConfig, path)
