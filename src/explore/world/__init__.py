"""The shapes world: a procedurally generated multimodal benchmark with exact ground truth.

Scenes of coloured shapes (``scene``), rendered with PIL (``render``), described by captions and
questions from the scene graph (``text``), judge pairs for the reward-model task (``judge``),
seed-based and compositional splits (``splits``), as Examples (``examples``), and exports (``export``).
"""

from explore.world.judge import CATEGORIES, JUDGE_KINDS, JudgePair, judge_pair
from explore.world.render import DEFAULT_RESOLUTION, render
from explore.world.scene import COLOURS, HELD_OUT_PAIRS, SHAPES, SIZES, Obj, Scene, SceneSpec, sample_scene
from explore.world.splits import SPLITS, scene_seed, split_scene, split_scenes
from explore.world.text import QA, QUESTION_TYPES, ask, caption, parse_caption, scene_facts
from explore.world.vocabulary import vocabulary

__all__ = [
    "CATEGORIES", "COLOURS", "DEFAULT_RESOLUTION", "HELD_OUT_PAIRS", "JUDGE_KINDS", "QA", "QUESTION_TYPES",
    "SHAPES", "SIZES", "SPLITS", "JudgePair", "Obj", "Scene", "SceneSpec", "ask", "caption", "judge_pair",
    "parse_caption", "render", "sample_scene", "scene_facts", "scene_seed", "split_scene", "split_scenes",
    "vocabulary",
]  # fmt: skip
