"""The training stream: an endless, seekable sequence of shapes-world examples.

Example ``k`` is built from training scene ``k``; the batch starting at ``k`` has one task, drawn
from the stage's mix with a generator seeded by ``(world seed, k)``. Because every example is a pure function of its index,
the data position (the next index) is all a checkpoint needs to resume the stream exactly.
"""

from __future__ import annotations

import numpy as np

from explore.data.example import Example
from explore.world.examples import WORLD_TASKS, world_examples
from explore.world.scene import SceneSpec


class WorldStream:
    """Training examples from the shapes world's ``train`` split.

    Args:
        tasks: task → sampling weight (vqa / caption / judge). Judge examples train the model to
            prefer the faithful response: the target is the faithful response itself.
        templates: wrap prompts in InstructBLIP's instruction templates.
        resolution: image side in pixels.
        world_seed: base seed of the world splits.
        spec: how scenes are sampled (object count, noise).
    """

    def __init__(self, tasks: dict[str, float], *, templates: bool, resolution: int, world_seed: int = 0,
                 spec: SceneSpec = SceneSpec()) -> None:  # fmt: skip
        self.tasks = [t for t in WORLD_TASKS if tasks.get(t, 0) > 0]
        weights = np.array([tasks[t] for t in self.tasks], dtype=float)
        self.probs = weights / weights.sum()
        self.templates = templates
        self.resolution = resolution
        self.world_seed = world_seed
        self.spec = spec

    def task_of(self, index: int) -> str:
        """The task of the batch that starts at example ``index``."""
        rng = np.random.default_rng([self.world_seed, index, 7])
        return self.tasks[int(rng.choice(len(self.tasks), p=self.probs))]

    def example(self, index: int, task: str) -> Example:
        (example,) = world_examples("train", 1, task, seed=self.world_seed, start=index, spec=self.spec,
                                    resolution=self.resolution, templates=self.templates)  # fmt: skip
        if task == "judge":  # learn to produce the faithful response to the judge query
            example.answers = [example.responses[example.preferred]]
        return example

    def batch(self, start: int, size: int) -> list[Example]:
        """Examples ``start … start + size - 1``, all of one task.

        One task per batch keeps padding small: a batch of short VQA answers never pads its
        decoder targets to the length of a caption.
        """
        task = self.task_of(start)
        return [self.example(i, task) for i in range(start, start + size)]
