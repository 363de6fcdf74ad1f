"""The pretraining config: model preset, world data, training stages, validation, checkpoints.

InstructBLIP trains in stages (arXiv 2305.06500): vision–language pretraining, then instruction
tuning in which the vision encoder and the LLM are frozen and only the instruction-aware Q-Former
(with the projection and the query tokens) is trained. A config lists its stages in order; each
stage names the components it trains, the task mix, its steps and its learning-rate schedule.
A stage with ``objective: objects`` pretrains the vision encoder alone on the world's objects
(:mod:`explore.train.objects`), standing in for InstructBLIP's pretrained ViT.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from explore.config import StrictModel, load_yaml_config

COMPONENTS: tuple[str, ...] = ("vision", "qformer", "query_tokens", "projection", "lm")
# Training tasks (explore.train.stream): vqa, caption, judge (the faithful answer as the target) as in the
# world; relation (VQA on relation questions only); judge_official (a judge pair in VL-RewardBench's
# official prompt, the target a reason from the scene graph and the official verdict line); judge_stepwise
# (the same prompt, the target each answer restated with its accuracy, then the verdict line); judge_compared
# (the same prompt, the target the reason, a check per answer ending in yes / no, both check words, the verdict
# line); judge_located (the same prompt, the target the reason, the wrong claim and the answer that holds it, the
# verdict line); relation_stepwise (relation questions, the target both positions, the relation along the asked
# axis, then the answer); shape_recoloured (a shape or shape-count question naming no colour, on the scene drawn in
# unnamed colours: explore.world.examples.recoloured_shape_example); judge_description (judge_compared on full
# descriptions that differ in one object's attribute only); judge_checklist (the same prompt on description pairs, the
# target a walk through Answer 1's objects, each checked against the image, then the verdict line); judge_read (the
# same walk, each step the answer's object, what the image shows in its cell, then yes / no); judge_cell (the same walk,
# each step the object's cell first, what the image shows there, then the answer's object and yes / no); judge_diff (the
# same prompt on description pairs, the target the object in which the two answers differ as each states it, what the
# image shows in that cell, the two yes / no and the verdict line); judge_zip (the same prompt on description pairs, the
# target both answers' objects side by side in their order, "both" after each pair that agrees, at the first that does
# not the read of its cell, the two yes / no and the verdict line); judge_copy (the same prompt on description pairs,
# the target the faithful description copied, then the verdict line); judge_absent (judge_compared on description pairs
# with the reason naming the unfaithful answer's object first, as the image does not show it: "the image shows no ...").
TASKS: tuple[str, ...] = ("vqa", "caption", "judge", "relation", "judge_official", "judge_stepwise",
                          "judge_compared", "judge_located", "relation_stepwise", "shape_recoloured",
                          "judge_description", "judge_checklist", "judge_read", "judge_cell", "judge_diff", "judge_zip",
                          "judge_copy", "judge_absent")
# Tasks that give every description pair of their mix their own target format (explore.train.stream): a walk through
# Answer 1's objects, each step written as named here, or ("diff") the differing object of both answers, or ("zip") both
# answers' objects side by side, or ("copy") the faithful answer copied, or ("absent") the compared target whose reason
# names the unfaithful answer's object first: at most one of them in a stage.
DESCRIPTION_FORMATS: dict[str, str] = {"judge_checklist": "checklist", "judge_read": "object_first",
                                     "judge_cell": "cell_first", "judge_diff": "diff", "judge_zip": "zip",
                                     "judge_copy": "copy", "judge_absent": "absent"}  # fmt: skip
# Tasks shown in the official judge prompt: they need the judge vocabulary and data.judge_max_length.
OFFICIAL_JUDGE_TASKS: tuple[str, ...] = ("judge_official", "judge_stepwise", "judge_compared", "judge_located",
                                         "judge_description", "judge_checklist", "judge_read", "judge_cell",
                                         "judge_diff", "judge_zip", "judge_copy", "judge_absent")


class ModelSection(StrictModel):
    preset: str = Field("shapes-small", description="model size preset (explore.models.presets)")
    seed: int = Field(0, ge=0, description="seed of the weight initialisation")
    init_from: str | None = Field(
        None,
        description="a model folder (written by an earlier recipe) whose weights start this run; a tensor whose "
        "first dimension grew (more words, more text positions) keeps the old rows and its fresh new rows",
    )
    init_components: list[str] | None = Field(
        None,
        description=f"with init_from, copy only these components' weights ({', '.join(COMPONENTS)}); the rest keep "
        "their fresh initialisation (e.g. [vision]: a trained, frozen ViT under a new Q-Former and LM)",
    )

    @model_validator(mode="after")
    def _components_known(self) -> ModelSection:
        if self.init_components is None:
            return self
        if self.init_from is None:
            raise ValueError("model.init_components needs model.init_from (the folder to copy them from)")
        unknown = sorted(set(self.init_components) - set(COMPONENTS))
        if unknown or not self.init_components:
            raise ValueError(f"model.init_components: unknown {unknown or 'empty list'}; expected some of {COMPONENTS}")
        return self


class DataSection(StrictModel):
    world_seed: int = Field(0, ge=0, description="base seed of the shapes-world splits")
    max_objects: int = Field(4, ge=1, le=9, description="most objects in a training scene")
    max_length: int = Field(48, ge=4, description="most tokens kept of a prompt or an answer")
    judge_max_length: int = Field(512, ge=4, description="most tokens kept of a judge_official prompt (the "
                                  "official VL-RewardBench prompt with both answers)")  # fmt: skip
    judge_vocabulary: bool = Field(False, description="add the words of the official judge prompt and of the "
                                   "judge reasons to the tokenizers (after the world's ids)")  # fmt: skip
    noise: float = Field(0.0, ge=0.0, description="std of pixel noise in training renders (0-255 units)")


class StageSection(StrictModel):
    name: str = Field(description="stage name, used in logs and checkpoint folders")
    steps: int = Field(gt=0, description="optimizer steps in this stage")
    batch_size: int = Field(64, gt=0, description="examples per optimizer step (per process)")
    lr: float = Field(1e-3, gt=0, description="peak learning rate (AdamW)")
    schedule: Literal["cosine", "constant", "linear"] = Field("cosine", description="decay after warm-up")
    warmup_steps: int = Field(100, ge=0, description="linear warm-up steps from 0 to lr")
    min_lr_ratio: float = Field(0.05, ge=0, le=1, description="final lr as a fraction of lr (cosine/linear)")
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay")
    grad_clip: float = Field(1.0, gt=0, description="max global gradient norm")
    trainable: list[str] = Field(description=f"components trained in this stage, from {COMPONENTS}")
    objective: Literal["language", "objects"] = Field(
        "language",
        description="language: the model's LM loss on the task mix; objects: vision pretraining — linear heads on "
        "the ViT token under each object learn its shape, colour, size and position (trainable: [vision]; the "
        "heads are dropped after the stage)",
    )
    tasks: dict[str, float] | None = Field(None, description=f"task mix: {' / '.join(TASKS)} → sampling weight "
                                           "(language stages)")  # fmt: skip
    templates: bool = Field(True, description="wrap prompts in InstructBLIP's instruction templates")
    relation_sentence: Literal["subject_first", "relation_last_compared"] = Field(
        "subject_first", description="relation step of relation_stepwise targets (explore.world.text."
        "RELATION_SENTENCES): 'the A is left of the B', or 'relative to the B the A is left' and for a yes/no "
        "'left compared to right'")  # fmt: skip
    recoloured_counts: Literal["present", "world"] = Field(
        "present", description="what shape_recoloured count questions count: 'present', a shape the scene has 70% of "
        "the time (shapes-judge-8/9), or 'world', all objects or any shape as the world's count questions draw them "
        "(explore.world.examples.recoloured_shape_example)")  # fmt: skip
    recolour_margin: Literal["hue", "detector"] = Field(
        "hue", description="how shape_recoloured's unnamed colours keep away from the colours a shape is held out "
        "with: 'hue', 45 degrees of hue (shapes-judge-8 to -48), or 'detector', no colour that explore.world.detect "
        "reads as one (explore.world.examples.unnamed_colour)")  # fmt: skip
    slot_loss: float = Field(0.0, ge=0, description="weight of the answer-slot auxiliary loss on official-judge "
                             "batches (explore.train.slots: a discarded linear head tells from the T5 encoder's states "
                             "which answer each answer token belongs to); 0: off")  # fmt: skip
    difference_loss: float = Field(0.0, ge=0, description="weight of the answer-difference auxiliary loss on "
                                   "official-judge batches (explore.train.slots: a discarded linear head tells from the "
                                   "T5 encoder's states which answer tokens lie where the two answers differ); 0: off")  # fmt: skip
    attribute_loss: float = Field(0.0, ge=0, description="weight of the query-attribute auxiliary loss on batches "
                                  "with questions about one object (explore.train.attributes: discarded linear heads "
                                  "read that object's shape and colour from the Q-Former's query outputs); 0: off")  # fmt: skip
    colour_consistency: float = Field(0.0, ge=0, description="weight of the colour-word consistency loss on "
                                      "non-judge batches (explore.train.consistency: on one object of each scene drawn "
                                      "alone, the query outputs for 'What shape is the <colour> object?' must equal "
                                      "those for 'What shape is the object?'); 0: off")  # fmt: skip
    consistency_target: Literal["self", "init_from"] = Field(
        "self", description="the colour-word consistency loss's target: 'self', the model's own colourless read "
        "(detached), or 'init_from', the colourless read of model.init_from kept frozen, onto which both reads are "
        "pulled")  # fmt: skip
    consistency_scene: bool = Field(False, description="ask the colour-word consistency loss's named instruction "
                                    "about the object's whole scene (the colour picking it out) instead of the object "
                                    "drawn alone")  # fmt: skip
    avoid_held_out_pairs: bool = Field(False, description="no training text of this stage names a held-out "
                                       "colour-shape pair (explore.world.HELD_OUT_PAIRS), not even a wrong answer, "
                                       "an invented object or an absent-object question; false: the first "
                                       "recipes' data, where such pairs appear only as false")  # fmt: skip
    max_objects: int | None = Field(None, ge=1, le=9, description="most objects per scene in this stage "
                                    "(default: data.max_objects); 1 gives a curriculum warm-up")  # fmt: skip

    @field_validator("trainable")
    @classmethod
    def _known_components(cls, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - set(COMPONENTS))
        if unknown or not value:
            raise ValueError(f"unknown components {unknown}; choose from {list(COMPONENTS)}")
        return value

    @field_validator("tasks")
    @classmethod
    def _known_tasks(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        if value is None:
            return value
        unknown = sorted(set(value) - set(TASKS))
        if unknown or not value or any(w < 0 for w in value.values()) or sum(value.values()) <= 0:
            raise ValueError(f"tasks must map {' / '.join(TASKS)} to non-negative weights; got {value}")
        if value.get("relation", 0) > 0 and value.get("relation_stepwise", 0) > 0:
            raise ValueError("relation and relation_stepwise give the same prompts two target formats (a short "
                             "answer, a stepwise one); keep one of them in a stage")  # fmt: skip
        formats = [t for t in DESCRIPTION_FORMATS if value.get(t, 0) > 0]
        if len(formats) > 1:
            raise ValueError(f"{' and '.join(formats)} give description pairs two target formats; keep one of them in "
                             "a stage")  # fmt: skip
        return value

    @model_validator(mode="after")
    def _warmup_fits(self) -> StageSection:
        if self.warmup_steps >= self.steps:
            raise ValueError(f"warmup_steps ({self.warmup_steps}) must be smaller than steps ({self.steps})")
        if self.objective == "language" and self.tasks is None:
            raise ValueError(f"a language stage needs tasks, a mix of {', '.join(TASKS)}")
        if self.slot_loss and not set(self.tasks or {}) & set(OFFICIAL_JUDGE_TASKS):
            raise ValueError(f"slot_loss acts on official-judge batches; add one of {OFFICIAL_JUDGE_TASKS} to tasks "
                             "or drop slot_loss")  # fmt: skip
        if self.difference_loss and not set(self.tasks or {}) & set(OFFICIAL_JUDGE_TASKS):
            raise ValueError(f"difference_loss acts on official-judge batches; add one of {OFFICIAL_JUDGE_TASKS} to "
                             "tasks or drop difference_loss")  # fmt: skip
        if self.attribute_loss and not {"vqa", "shape_recoloured"} & set(self.tasks or {}):
            raise ValueError("attribute_loss acts on questions about one object; add vqa or shape_recoloured to tasks "
                             "or drop attribute_loss")  # fmt: skip
        if self.consistency_scene and not self.colour_consistency:
            raise ValueError("consistency_scene changes the colour-word consistency loss; set colour_consistency or "
                             "drop consistency_scene")  # fmt: skip
        if self.objective == "objects" and (self.trainable != ["vision"] or self.tasks is not None):
            raise ValueError("an objects stage trains the vision encoder alone: set trainable: [vision] and no tasks")
        return self


class EvalSection(StrictModel):
    every: int = Field(500, gt=0, description="validate every this many steps (and at the end of each stage)")
    vqa: int = Field(140, ge=0, description="validation VQA examples (exact match)")
    judge: int = Field(60, ge=0, description="validation judge pairs (likelihood judge)")
    caption: int = Field(20, ge=0, description="validation captions (exact scene recovery)")
    objects: int = Field(200, ge=1, description="validation scenes of an objects stage (head accuracy per attribute)")
    batch_size: int = Field(64, gt=0, description="evaluation batch size")


class TrainConfig(StrictModel):
    model: ModelSection = ModelSection()
    data: DataSection = DataSection()
    stages: list[StageSection] = Field(min_length=1, description="training stages, run in order")
    eval: EvalSection = EvalSection()
    seed: int = Field(0, ge=0, description="seed of the training randomness (dropout); weights use model.seed")
    checkpoint_every: int = Field(500, gt=0, description="save a resumable checkpoint every this many steps")
    keep_checkpoints: int = Field(1, ge=1, description="newest checkpoints kept (older ones are deleted as new ones "
                                  "are written); more lets a run resume from an earlier step")  # fmt: skip
    output_dir: str = Field("runs/pretrain", description="run folder: checkpoints, logs, final model")

    @model_validator(mode="after")
    def _judge_words_known(self) -> TrainConfig:
        official = [t for s in self.stages for t in OFFICIAL_JUDGE_TASKS if (s.tasks or {}).get(t, 0) > 0]
        if not self.data.judge_vocabulary and official:
            raise ValueError(f"a {official[0]} task needs data.judge_vocabulary: true (the official prompt's words "
                             "are not in the world vocabulary)")  # fmt: skip
        anchored = [s.name for s in self.stages if s.colour_consistency and s.consistency_target == "init_from"]
        if anchored and self.model.init_from is None:
            raise ValueError(f"stage {anchored[0]!r}: consistency_target init_from needs model.init_from (the frozen "
                             "model whose colourless read is the target)")  # fmt: skip
        return self

    @property
    def total_steps(self) -> int:
        return sum(stage.steps for stage in self.stages)


def load_train_config(path: str | Path) -> TrainConfig:
    """Read and validate a pretraining YAML config (unknown keys are errors)."""
    return load_yaml_config(TrainConfig, path)
