"""The training stream: an endless, seekable sequence of shapes-world examples.

Example ``k`` is built from training scene ``k``; the batch starting at ``k`` has one task, drawn
from the stage's mix with a generator seeded by ``(world seed, k)``. Because every example is a pure function of its index,
the data position (the next index) is all a checkpoint needs to resume the stream exactly.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from explore.data.example import Example
from explore.data.judge_prompt import judge_prompt, verdict
from explore.train.config import DESCRIPTION_FORMATS, OFFICIAL_JUDGE_TASKS, TASKS
from explore.world.examples import recoloured_shape_example, world_examples
from explore.world.scene import SIZES, Scene, SceneSpec
from explore.world.splits import scene_seed, split_scene
from explore.world.text import RELATION_SENTENCES, caption_objects, relation_steps, words

# Judge pairs whose two responses are whole scene descriptions (explore.world.judge.judge_pair).
DESCRIPTION_KINDS: tuple[str, ...] = ("wrong_attribute_description", "invented_object")


class WorldStream:
    """Training examples from the shapes world's ``train`` split.

    Args:
        tasks: task → sampling weight (see :data:`explore.train.config.TASKS`). ``judge`` examples
            train the model to prefer the faithful response: the target is the faithful response
            itself. ``relation`` examples are VQA on relation questions only. ``judge_official``
            examples show the pair in VL-RewardBench's official judge prompt, the faithful answer
            as "Answer 1" or "Answer 2" (the example's own coin flip, so both orders appear), and
            the target is the reason from the scene graph followed by the official verdict line.
            ``judge_stepwise``: the same prompt; the target restates each answer and its accuracy
            ("Answer 1: ... Accuracy: no. Answer 2: ... Accuracy: yes.") before the verdict line, so
            the verdict follows from two checks the model can make one at a time.
            ``judge_compared``: the same prompt; the target is the reason, then a short check per answer
            whose yes / no is the last word of its step, next to the two words it compares (the answer's
            own claim, copied from the prompt, and the reason's), then both check words side by side just
            before the verdict line (:func:`compared_judge_target`).
            ``judge_located``: the same prompt; the target is the reason, the wrong answer's claim and the
            answer that holds it, then the verdict line (:func:`located_judge_target`): the judge finds the
            wrong word by its content rather than reading a claim out of a given answer.
            ``relation_stepwise``: relation questions (the prompts of ``relation``), the target worked out
            step by step (:func:`explore.world.text.relation_steps`): both objects' positions, the relation
            along the asked axis, then the short answer ("the red circle is at the top left and the blue
            square is at the right . the red circle is left of the blue square . yes"). In a mix with
            ``relation_stepwise`` the relation questions that ``vqa`` draws get the same stepwise target, so
            one prompt never has two target formats (the config refuses ``relation`` in the same stage).
            ``judge_description``: ``judge_compared`` on one kind of pair only, full descriptions that differ in one
            object's attribute (``wrong_attribute_description``: the shipped judge's weak spot, 45% of 60 such
            pairs on world seed 31337, where it gets 96% of the rest).
            ``judge_checklist``: the official prompt on the two kinds of description pair (one object's attribute
            changed, or an object invented); the target walks through Answer 1's objects in its own order, each
            copied with a yes / no from the image, and stops at the first no (:func:`walk_judge_target`): the
            judge checks one object at a time instead of finding the one word in which two long descriptions
            differ. In a mix with ``judge_checklist`` every description pair (also those ``judge_compared`` and
            ``judge_description`` draw) gets this target, so one prompt never has two target formats.
            ``judge_read``: the same walk, each step the answer's object, then what the image shows in that
            object's cell (read like a caption), then yes / no (:func:`walk_judge_target`): the check becomes a
            comparison of two short phrases. The same rule: every description pair of the mix gets it.
            ``judge_cell``: the walk by cells: each step names the cell of Answer 1's next object, what the image
            shows there, then the answer's object there and yes / no (:func:`walk_judge_target`): the read comes
            before the answer's words are in the target, so it cannot copy them from a step before.
            ``judge_diff``: the object in which the two descriptions differ, as Answer 1 and then Answer 2 state
            it, then what the image shows in its cell, the two yes / no and the verdict line
            (:func:`diff_judge_target`): finding the difference is a text step written before the image is read,
            and the read is a choice between the two stated objects. The same rule: every description pair of the
            mix gets it.
            ``judge_zip``: both descriptions' objects side by side in their order, "both" after each pair that
            agrees, and at the first that does not, the read of its cell, the two yes / no and the verdict line
            (:func:`zip_judge_target`): the difference is found one short comparison at a time. The same rule.
            ``judge_copy``: the faithful description copied from the prompt, then the verdict line
            (:func:`copy_judge_target`). The same rule.
            ``judge_absent``: the ``judge_compared`` target with the reason of a changed object written as the
            reason of an invented one is, the unfaithful answer's object first ("the image shows no small purple
            triangle at the center, it shows a small yellow triangle there.", :func:`absent_judge_target`): the
            object to name is then the one phrase of either answer that the image does not show, as for an invented
            object, instead of the faithful object whose counterpart differs (which only a text comparison finds). The
            same rule.
            ``shape_recoloured``: a shape or shape-count question whose text names no colour, on the scene drawn
            with every object in its own unnamed colour
            (:func:`explore.world.examples.recoloured_shape_example`).
        recoloured_counts: how ``shape_recoloured`` count questions pick what they count ("present" or "world",
            :func:`explore.world.examples.recoloured_shape_example`).
        recolour_margin: how ``shape_recoloured``'s colours keep away from held-out partners ("hue" or "detector",
            :func:`explore.world.examples.unnamed_colour`).
        templates: wrap prompts in InstructBLIP's instruction templates.
        resolution: image side in pixels.
        world_seed: base seed of the world splits.
        spec: how scenes are sampled (object count, noise).
        relation_sentence: how stepwise relation targets word the relation step
            (:data:`explore.world.text.RELATION_SENTENCES`).
        avoid_pairs: colour-shape pairs no training text names, not even in a wrong answer, an invented
            object or an absent-object question (the held-out pairs: :func:`explore.world.judge.judge_pair`).
    """

    def __init__(self, tasks: dict[str, float], *, templates: bool, resolution: int, world_seed: int = 0,
                 spec: SceneSpec = SceneSpec(), relation_sentence: str = "subject_first",
                 avoid_pairs: frozenset[tuple[str, str]] = frozenset(),
                 recoloured_counts: str = "present", recolour_margin: str = "hue") -> None:  # fmt: skip
        self.tasks = [t for t in TASKS if tasks.get(t, 0) > 0]
        self.stepwise_relations = "relation_stepwise" in self.tasks
        # the step format of the mix's description-pair walk (the config allows one), else None
        self.description_format = next((DESCRIPTION_FORMATS[t] for t in self.tasks if t in DESCRIPTION_FORMATS), None)
        weights = np.array([tasks[t] for t in self.tasks], dtype=float)
        self.probs = weights / weights.sum()
        self.templates = templates
        self.resolution = resolution
        self.world_seed = world_seed
        self.spec = spec
        if relation_sentence not in RELATION_SENTENCES:
            raise ValueError(f"unknown relation sentence {relation_sentence!r}; expected one of {RELATION_SENTENCES}")
        self.relation_sentence = relation_sentence
        self.avoid_pairs = avoid_pairs
        self.recoloured_counts = recoloured_counts
        self.recolour_margin = recolour_margin

    def task_of(self, index: int) -> str:
        """The task of the batch that starts at example ``index``."""
        rng = np.random.default_rng([self.world_seed, index, 7])
        return self.tasks[int(rng.choice(len(self.tasks), p=self.probs))]

    def example(self, index: int, task: str) -> Example:
        if task == "shape_recoloured":
            scene = split_scene("train", index, self.world_seed, self.spec)
            rng = np.random.default_rng([scene_seed("train", index, self.world_seed), 11, 1])
            return recoloured_shape_example(scene, rng, f"train-shape_recoloured-{index:06d}", templates=self.templates,
                                            resolution=self.resolution, counts=self.recoloured_counts,
                                            margin=self.recolour_margin)  # fmt: skip
        world_task = {"relation": "vqa", "relation_stepwise": "vqa",
                      **dict.fromkeys(OFFICIAL_JUDGE_TASKS, "judge")}.get(task, task)  # fmt: skip
        select = {"relation": {"qtypes": ("relation",)}, "relation_stepwise": {"qtypes": ("relation",)},
                  "judge_description": {"kinds": ("wrong_attribute_description",)},
                  **{name: {"kinds": DESCRIPTION_KINDS} for name in DESCRIPTION_FORMATS}}.get(task, {})  # fmt: skip
        source = {"seed": self.world_seed, "start": index, "spec": self.spec, "resolution": self.resolution,
                  "templates": self.templates, "avoid_pairs": self.avoid_pairs}  # fmt: skip
        examples = world_examples("train", 1, world_task, **source, **select)
        if not examples:  # a relation needs two objects: a one-object scene gets the usual question cycle
            examples = world_examples("train", 1, world_task, **source)
        (example,) = examples
        if task == "judge":  # learn to produce the faithful response to the judge query
            example.answers = [example.responses[example.preferred]]
        if task in ("judge_official", "judge_stepwise"):
            return official_judge_example(example, stepwise=task == "judge_stepwise")
        if self.description_format and task in OFFICIAL_JUDGE_TASKS and example.meta.get("kind") in DESCRIPTION_KINDS:
            return description_judge_example(example, self.description_format)
        if task in ("judge_compared", "judge_located", "judge_description"):
            return compared_judge_example(example, located=task == "judge_located")
        if self.stepwise_relations and example.task == "vqa" and example.category == "relation":
            return stepwise_relation_example(example, self.relation_sentence)
        return example

    def batch(self, start: int, size: int) -> list[Example]:
        """Examples ``start … start + size - 1``, all of one task.

        One task per batch keeps padding small: a batch of short VQA answers never pads its
        decoder targets to the length of a caption.
        """
        task = self.task_of(start)
        return [self.example(i, task) for i in range(start, start + size)]


def stepwise_relation_example(example: Example, sentence: str = "subject_first") -> Example:
    """A world relation question with its short answer replaced by the stepwise target
    (:func:`explore.world.text.relation_steps`, the relation step worded as ``sentence``), built from the scene
    and the question's stored objects."""
    scene = Scene.from_dict(example.meta["scene"])
    by_name = {obj.name: obj for obj in scene.objects}
    a, b = by_name[example.meta["a"]], by_name[example.meta["b"]]
    target = relation_steps(a, b, example.meta["relation"], example.answers[0], sentence)
    return replace(example, answers=[target])


def official_judge_example(example: Example, *, stepwise: bool = False) -> Example:
    """A world judge example as a generative judge sees it in VL-RewardBench: the official prompt with
    the stored response order, and as the target either the pair's reason and the official verdict
    line ("the circle is red, not blue. Overall Judgment: Answer 2 is better.") or, ``stepwise``, each
    answer restated with its accuracy and then the verdict line ("Answer 1: The circle is blue.
    Accuracy: no. Answer 2: The circle is red. Accuracy: yes. Overall Judgment: Answer 2 is better.")."""
    first, second = example.responses
    if stepwise:
        checks = [f"Answer {k + 1}: {response} Accuracy: {'yes' if k == example.preferred else 'no'}."
                  for k, response in enumerate(example.responses)]  # fmt: skip
        target = f"{' '.join(checks)} {verdict(example.preferred)}"
    else:
        target = f"{example.meta['reason']} {verdict(example.preferred)}"
    return replace(example, prompt=judge_prompt(example.prompt, first, second), answers=[target])


def judge_claims(example: Example) -> list[str]:
    """The few words on which each of a world judge pair's two responses (stored order) differ, as its claim.

    The responses of a pair differ in one word (a colour, shape, size or relation word) or in a count; those
    words are the claims ("blue" / "red", "3" / "2"). A caption with an invented object differs by a whole
    object: its claim is the object's colour and shape ("pink square") and the faithful caption's claim is
    "no pink square" (the reason's "the image shows no ...").

    Raises:
        ValueError: the example is not a world judge pair, or its responses differ in another way.
    """
    if example.task != "judge" or "kind" not in example.meta or len(example.responses) != 2:
        raise ValueError(f"judge_claims: {example.id} is not a world judge pair (task {example.task!r})")
    if example.meta["kind"] == "invented_object":  # reason: "the image shows no small pink square at the right."
        fake = words(example.meta["reason"].removeprefix("the image shows no "))
        thing = " ".join(w for w in fake[: fake.index("at")] if w not in SIZES)
        return [thing if k != example.preferred else f"no {thing}" for k in range(2)]
    first, second = (words(response) for response in example.responses)
    start = 0
    while start < min(len(first), len(second)) and first[start] == second[start]:
        start += 1
    end = 0
    while end < min(len(first), len(second)) - start and first[-1 - end] == second[-1 - end]:
        end += 1
    claims = [first[start : len(first) - end], second[start : len(second) - end]]
    if example.meta["kind"] == "wrong_count":  # "is 1 star" / "are 3 stars": the numbers
        claims = [[w for w in claim if w.isdigit()] for claim in claims]
    if any(len(claim) != 1 for claim in claims):
        raise ValueError(f"judge_claims: the responses of {example.id} ({example.meta['kind']}) do not differ in "
                         f"one word: {example.responses}")  # fmt: skip
    return [claim[0] for claim in claims]


def compared_judge_target(example: Example) -> str:
    """The ``judge_compared`` target of a world judge pair in its stored order: the reason, one check per
    answer ending in its yes / no, the two check words side by side, then the official verdict line::

        the circle is red, not blue. Answer 1 : blue compared to red . no . Answer 2 : red compared to
        red . yes . no yes . Overall Judgment: Answer 2 is better.

    As in the relation targets that taught yes / no (configs/pretrain/relation-stepwise-3.yaml), each
    decisive word comes last in its step with the words it decides on right before it."""
    claims = judge_claims(example)
    truth = claims[example.preferred]
    checks = ["yes" if k == example.preferred else "no" for k in range(2)]
    steps = [f"Answer {k + 1} : {claim} compared to {truth} . {check} ." for k, (claim, check)
             in enumerate(zip(claims, checks))]  # fmt: skip
    return f"{example.meta['reason']} {' '.join(steps)} {' '.join(checks)} . {verdict(example.preferred)}"


def located_judge_target(example: Example) -> str:
    """The ``judge_located`` target of a world judge pair in its stored order: the reason, the unfaithful
    answer's claim and its position, then the official verdict line::

        the circle is red, not blue. blue : Answer 1 . Overall Judgment: Answer 2 is better.

    The claim ("blue") is written first from the reason, so the position can be found by the claim's content
    in the prompt instead of by reading a given answer."""
    wrong = 1 - example.preferred
    claim = judge_claims(example)[wrong]
    return f"{example.meta['reason']} {claim} : Answer {wrong + 1} . {verdict(example.preferred)}"


def compared_judge_example(example: Example, *, located: bool = False) -> Example:
    """A world judge example in the official judge prompt (stored order) with the
    :func:`compared_judge_target` (``located``: the :func:`located_judge_target`) as its target."""
    first, second = example.responses
    prompt = judge_prompt(example.prompt, first, second)
    target = located_judge_target(example) if located else compared_judge_target(example)
    return replace(example, prompt=prompt, answers=[target])


def _require_description_pair(example: Example, caller: str) -> None:
    if example.task != "judge" or example.meta.get("kind") not in DESCRIPTION_KINDS:
        raise ValueError(f"{caller}: {example.id} is not a world description pair "
                         f"(kind {example.meta.get('kind')!r}); expected one of {DESCRIPTION_KINDS}")  # fmt: skip


def walk_judge_target(example: Example, step: str = "checklist") -> str:
    """The target of a world description pair (stored order) for the description walks (``judge_checklist``,
    ``judge_read``, ``judge_cell``): Answer 1's objects in its own order, each checked against the scene, up to the
    first that fails, then the official verdict line. The two responses describe the same scene but for one object, so
    Answer 1 holds an object the image does not show exactly when Answer 2 is the faithful one. ``step`` is how each
    step is written (:data:`explore.train.config.DESCRIPTION_FORMATS`):

    - ``checklist``: the object copied from the prompt, then yes / no::

        Answer 1 : a small red star at the top left yes . a large purple cross at the bottom no .
        Overall Judgment: Answer 2 is better.

    - ``object_first``: the object, what the image shows in its cell ("no object" when empty), then the check::

        Answer 1 : a small red star at the top left , the image shows a small red star . yes . ...

    - ``cell_first``: the cell, what the image shows there, then the answer's object and the check (the read precedes
      the answer's words)::

        Answer 1 : at the bottom : the image shows a large blue cross , the answer has a large purple cross . no . ...

    Raises:
        ValueError: the example is not a world description pair, an unknown ``step``, or checks that do not decide
            the pair.
    """
    _require_description_pair(example, "walk_judge_target")
    steps_known = sorted(set(DESCRIPTION_FORMATS.values()) - set(DESCRIPTION_TARGETS))
    if step not in steps_known:
        raise ValueError(f"walk_judge_target: unknown step {step!r}; expected one of {steps_known}")
    by_cell = {obj.position: obj for obj in Scene.from_dict(example.meta["scene"]).objects}
    steps, check = [], "yes"
    for size, colour, shape, position in caption_objects(example.responses[0]):
        there = by_cell.get(position)
        seen = "no object" if there is None else f"a {there.size} {there.colour} {there.shape}"
        said = f"a {size} {colour} {shape}"
        check = "yes" if seen == said else "no"  # a cell holds one object at most
        steps.append({"checklist": f"{said} at the {position} {check} .",
                      "object_first": f"{said} at the {position} , the image shows {seen} . {check} .",
                      "cell_first": f"at the {position} : the image shows {seen} , the answer has {said} . {check} ."
                      }[step])  # fmt: skip
        if check == "no":
            break
    if (check == "no") == (example.preferred == 0):
        raise ValueError(f"walk_judge_target: the checks of {example.id} do not decide its pair: {steps}")
    return f"Answer 1 : {' '.join(steps)} {verdict(example.preferred)}"


def diff_judge_target(example: Example) -> str:
    """The ``judge_diff`` target of a world description pair (stored order): the object in which the two responses
    differ as each states it ("no ..." for the response without an invented object), what the image shows in that
    object's cell, the two yes / no, then the official verdict line::

        Answer 1 : a small pink circle at the bottom left . Answer 2 : a large pink circle at the bottom left .
        at the bottom left the image shows a large pink circle . no yes . Overall Judgment: Answer 2 is better.

    Raises:
        ValueError: the example is not a world description pair, or its responses differ in more than one object.
    """
    _require_description_pair(example, "diff_judge_target")
    stated = [caption_objects(response) for response in example.responses]
    only = [[obj for obj in objects if obj not in stated[1 - k]] for k, objects in enumerate(stated)]
    changed = [obj for objects in only for obj in objects]
    if len(changed) not in (1, 2) or len({obj[3] for obj in changed}) != 1:
        raise ValueError(f"diff_judge_target: the responses of {example.id} do not differ in one object: "
                         f"{[' '.join(obj) for obj in changed]}")  # fmt: skip
    position = changed[0][3]
    there = next((obj for obj in Scene.from_dict(example.meta["scene"]).objects if obj.position == position), None)
    seen = "no object" if there is None else f"a {there.size} {there.colour} {there.shape}"
    claims, checks = [], []
    for objects in only:  # an answer without the changed object (the faithful one of an invented pair): "no ..."
        size, colour, shape, _ = objects[0] if objects else changed[0]
        claims.append(f"{'a' if objects else 'no'} {size} {colour} {shape} at the {position}")
        checks.append("yes" if (f"a {size} {colour} {shape}" if objects else "no object") == seen else "no")
    if checks != ["yes" if k == example.preferred else "no" for k in range(2)]:
        raise ValueError(f"diff_judge_target: the read of {example.id} ({seen}) does not decide its pair: {claims}")
    steps = " ".join(f"Answer {k + 1} : {claim} ." for k, claim in enumerate(claims))
    return f"{steps} at the {position} the image shows {seen} . {' '.join(checks)} . {verdict(example.preferred)}"


def zip_judge_target(example: Example) -> str:
    """The ``judge_zip`` target of a world description pair (stored order): the two responses' objects side by side in
    their order (both name the scene's objects in reading order), "both" after each pair that agrees, and at the first
    pair that does not, what the image shows in the cell of the object only one response has, the two yes / no and the
    official verdict line::

        Answer 1 : a small red star at the top left . Answer 2 : a small red star at the top left . both . Answer 1 :
        a large purple cross at the bottom . Answer 2 : a large blue cross at the bottom . at the bottom the image
        shows a large blue cross . no yes . Overall Judgment: Answer 2 is better.

    A response that has no object left is "no object". ("both" and not "same": the judge vocabulary has no "same".)

    Raises:
        ValueError: the example is not a world description pair, or the read does not decide it.
    """
    _require_description_pair(example, "zip_judge_target")
    stated = [caption_objects(response) for response in example.responses]
    by_cell = {obj.position: obj for obj in Scene.from_dict(example.meta["scene"]).objects}
    steps = []
    for k in range(max(map(len, stated))):
        pair = [objects[k] if k < len(objects) else None for objects in stated]
        said = ["no object" if obj is None else "a {} {} {} at the {}".format(*obj) for obj in pair]
        steps.append(f"Answer 1 : {said[0]} . Answer 2 : {said[1]} .")
        if pair[0] == pair[1]:
            steps.append("both .")
            continue
        # the object only one response has: the changed one (both sides), or the invented one
        single = next(obj for j, obj in enumerate(pair) if obj is not None and obj not in stated[1 - j])
        there = by_cell.get(single[3])
        seen = "no object" if there is None else f"a {there.size} {there.colour} {there.shape}"
        # what each answer says is in that cell: its object here, or "no object" (none left, or one of another cell)
        here = ["a {} {} {}".format(*obj[:3]) if obj is not None and obj[3] == single[3] else "no object" for obj in pair]
        checks = ["yes" if claim == seen else "no" for claim in here]
        if checks != ["yes" if j == example.preferred else "no" for j in range(2)]:
            raise ValueError(f"zip_judge_target: the read of {example.id} ({seen}) does not decide its pair: {said}")
        steps.append(f"at the {single[3]} the image shows {seen} . {' '.join(checks)} .")
        return f"{' '.join(steps)} {verdict(example.preferred)}"
    raise ValueError(f"zip_judge_target: the responses of {example.id} name the same objects")


def copy_judge_target(example: Example) -> str:
    """The ``judge_copy`` target of a world description pair (stored order): the faithful response copied from the
    prompt, then the official verdict line::

        there are a small red star at the top left and a large blue cross at the bottom . Overall Judgment: Answer 2
        is better.

    The two responses share every word up to the one where they part, so the copy's choice there is the comparison the
    likelihood judge makes (which response the image makes likelier); nothing else has to be found first.

    Raises:
        ValueError: the example is not a world description pair.
    """
    _require_description_pair(example, "copy_judge_target")
    return f"{example.responses[example.preferred]} . {verdict(example.preferred)}"


def absent_judge_target(example: Example) -> str:
    """The ``judge_absent`` target of a world description pair (stored order): :func:`compared_judge_target` with the
    reason of a pair whose unfaithful answer changes one object's attribute naming that object first, as the reason of
    an invented object does, then what the image shows in its cell::

        the image shows no small purple triangle at the center, it shows a small yellow triangle there. Answer 1 :
        yellow compared to yellow . yes . Answer 2 : purple compared to yellow . no . yes no . Overall Judgment:
        Answer 1 is better.

    Why: every object of the faithful answer is in the image, so the reason's first object ("the image shows a small
    yellow triangle ...") can only be found by comparing the two texts; the changed object of the unfaithful answer is
    the one phrase of either answer the image does not show, which is how the shipped judge finds an invented object
    (every invented pair of world seed 2027 right, against 41% of the colour and shape changes).
    An invented pair keeps its compared target (its reason already reads "the image shows no ...").

    Raises:
        ValueError: the example is not a world description pair, or its responses differ in more than one object.
    """
    _require_description_pair(example, "absent_judge_target")
    if example.meta["kind"] == "invented_object":
        return compared_judge_target(example)
    faithful, unfaithful = (caption_objects(example.responses[k]) for k in (example.preferred, 1 - example.preferred))
    fake = [obj for obj in unfaithful if obj not in faithful]
    true = [obj for obj in faithful if obj not in unfaithful]
    if len(fake) != 1 or len(true) != 1 or fake[0][3] != true[0][3]:
        raise ValueError(f"absent_judge_target: the responses of {example.id} do not differ in one object's attribute: "
                         f"{example.responses}")  # fmt: skip
    (size, colour, shape, position), (true_size, true_colour, true_shape, _) = fake[0], true[0]
    reason = (f"the image shows no {size} {colour} {shape} at the {position}, "
              f"it shows a {true_size} {true_colour} {true_shape} there.")  # fmt: skip
    return compared_judge_target(replace(example, meta={**example.meta, "reason": reason}))


# The description formats that are not walks (explore.train.config.DESCRIPTION_FORMATS), each with its target.
DESCRIPTION_TARGETS = {"diff": diff_judge_target, "zip": zip_judge_target, "copy": copy_judge_target,
                       "absent": absent_judge_target}  # fmt: skip


def description_judge_example(example: Example, step: str = "checklist") -> Example:
    """A world description pair in the official judge prompt (stored order) with its description target: the
    :func:`walk_judge_target` for a walk's ``step``, else the function of :data:`DESCRIPTION_TARGETS` (``"diff"``,
    ``"zip"``, ``"copy"``, ``"absent"``)."""
    first, second = example.responses
    target = DESCRIPTION_TARGETS[step](example) if step in DESCRIPTION_TARGETS else walk_judge_target(example, step)
    return replace(example, prompt=judge_prompt(example.prompt, first, second), answers=[target])
