"""The shipped embedded model: it loads offline, is small, uses the image, and answers held-out questions."""

import pytest
import torch

from explore.data.example import Example
from explore.eval.generative_judge import judge_generatively
from explore.eval.scoring import answer_budget, score_records
from explore.eval.world import image_sensitivity, normalize_answer
from explore.models.build import count_parameters
from explore.models.generate import generate_answers
from explore.models.loading import embedded_folder, load_model
from explore.world.examples import world_examples
from explore.world.render import render
from explore.world.splits import held_out_objects

# the shipped model (shapes-judge-51): 138 / 139; -50: 139 / 137; -49: 141 / 138; -43 (sessions 27-29): 128 / 123;
# -25: 131 / 124; -21: 121 / 118; -14: 129 / 91. Both reads fail on every model before -49 (issue 14: the model it
# replaced fails).
UNNAMED_LEAST, NAMED_LEAST = 134, 131


@pytest.fixture(scope="module")
def embedded():
    return load_model("embedded")


def test_embedded_weights_are_small_safetensors():
    files = list(embedded_folder().iterdir())
    weights = [f for f in files if f.suffix == ".safetensors"]
    assert weights and not [f for f in files if f.suffix in (".bin", ".pt", ".pkl")]
    assert sum(f.stat().st_size for f in weights) < 20 * 2**20


def test_embedded_model_is_the_shapes_small_judge_preset(embedded):
    model, processor = embedded
    assert count_parameters(model)["total"] == 3_930_016  # shapes-small-judge with the judge vocabulary
    assert model.config.qformer_config.max_position_embeddings == 512
    assert processor.image_processor.size["height"] == 64


def test_embedded_model_uses_the_image(embedded):
    model, processor = embedded
    examples = world_examples("test", 16, "caption")
    assert image_sensitivity(model, processor, examples) > 0.05


def test_embedded_model_answers_held_out_questions(embedded):
    """40 questions about test-split scenes (never trained on): colour / shape / size / existence.
    The shipped model (shapes-judge-51) gets 39 right, shape 9 of 10 (measured; shapes-judge-43: 40 and 10;
    shapes-judge-25: 39 and 10; shapes-judge-21: 40 and 10; shapes-judge-12: 39 and 10; shapes-judge-9: 40 and 10; shapes-judge-6: 39 and 10; the model of sessions 5-12: 40
    and 10); the answer prior would get about 13, and the first shipped model (no objects stage) got 28, shape 5 of 10."""
    model, processor = embedded
    examples = world_examples("test", 40, "vqa", qtypes=("colour", "shape", "size", "exist"))
    with torch.inference_mode():
        answers = generate_answers(model, processor, examples, max_new_tokens=6)
    right = [normalize_answer(a) == normalize_answer(e.answers[0]) for a, e in zip(answers, examples)]
    shape = [r for r, e in zip(right, examples) if e.category == "shape"]
    assert sum(right) >= 36 and sum(shape) >= 8, list(zip([e.meta["question"] for e in examples], answers))


@pytest.mark.parametrize(("question", "least"), [("What shape is the object?", UNNAMED_LEAST),
                                                ("What shape is the {colour} object?", NAMED_LEAST)])  # fmt: skip
def test_embedded_model_reads_shapes_of_held_out_colour_shape_pairs(embedded, question, least):
    """150 objects of held-out colour-shape pairs (a "red square": never in any training image or text), each drawn
    alone, asked their shape without and with their colour named ("What shape is the red object?": the question names
    a colour never seen with that shape). The shipped model (shapes-judge-51) gets 138 and 139 right; sessions 27-29's
    (shapes-judge-43) 128 and 123; sessions 20-26's (shapes-judge-25) 131 and 124; session 19's
    (shapes-judge-21) 121 and 118 (both reads fail on it); session 16-18's (shapes-judge-14) 129 and 91 (the named
    read fails on it), session 15's (shapes-judge-12) 125 unnamed, shapes-judge-18 (consistency unanchored) 118 and
    106, session 14's (shapes-judge-9, the ViT frozen) 106 unnamed, session 13's (shapes-judge-6, no recoloured
    shapes) 84 (measured; issue 14's compositional split; benchmarks/held_out_objects.py)."""
    model, processor = embedded
    examples = [Example(id=str(k), task="vqa", image=render(s), prompt=question.format(colour=s.objects[0].colour),
                        answers=[s.objects[0].shape]) for k, s in enumerate(held_out_objects(150))]  # fmt: skip
    with torch.inference_mode():
        answers = generate_answers(model, processor, examples, max_new_tokens=6)
    right = sum(normalize_answer(a) == e.answers[0] for a, e in zip(answers, examples))
    assert right >= least, right


def test_embedded_model_composes_relations(embedded):
    """30 relation questions about test-split scenes ("Is the red circle left of the blue square?", "Where is the A
    relative to the B?"), answered step by step and scored by the last step as `explore eval` scores them. The
    shipped model (shapes-judge-51) gets 29 right (measured; shapes-judge-43, -12 and -9: 30; shapes-judge-6: 29); the model of sessions 5-12 got 14,
    at chance (issue 14)."""
    model, processor = embedded
    examples = world_examples("test", 40, "vqa", qtypes=("relation",))
    assert len(examples) == 30 and {e.category for e in examples} == {"relation"}
    with torch.inference_mode():
        answers = generate_answers(model, processor, examples, max_new_tokens=answer_budget(examples, 6))
    records = score_records("vqa", examples, [{"output": answer} for answer in answers])
    assert sum(r["exact_match"] for r in records) >= 25, list(zip([e.meta["question"] for e in examples], answers))


def test_embedded_model_judges_in_the_official_format(embedded):
    """20 test-split judge pairs through VL-RewardBench's official protocol (official prompt, answers
    swapped per sample, 3 samples at temperature 0.2, the official regex, majority vote). The model
    before wave two parsed 0 of 20: it answered the question instead of judging; the model of sessions
    5-12 parsed 17 and picked the better answer in 7 of them (chance). The shipped model (shapes-judge-51) parses 20
    and is right in 18 (measured; shapes-judge-43: 20 and 18; shapes-judge-25: 20 and 16; shapes-judge-21: 20 and 16; shapes-judge-12: 20 and 18;
    shapes-judge-9: 20 and 19; shapes-judge-6: 20 and 18)."""
    model, processor = embedded
    examples = world_examples("test", 20, "judge")
    results = judge_generatively(model, processor, examples, samples=3, seed=0)
    parsed = [(r, e) for r, e in zip(results, examples) if r["choice"] is not None]
    assert len(parsed) >= 18, [r["output"] for r in results]
    assert all("overall judgment" in r["output"] for r, _ in parsed)
    assert sum(r["choice"] == e.preferred for r, e in parsed) >= 15, [r["output"] for r in results]


def test_embedded_model_judges_description_pairs(embedded):
    """100 test-split judge pairs of the judge's weakest kind, a wrong attribute inside a longer description, through
    the official protocol (3 samples, answers swapped per sample, majority vote). The shipped model (shapes-judge-51)
    is right in 84; sessions 27-29's (shapes-judge-43) in 83; sessions 20-26's (shapes-judge-25) in 64, shapes-judge-42 in 82, -44 in 86 (measured): the test
    fails on the model it replaced (issue 14)."""
    model, processor = embedded
    examples = world_examples("test", 100, "judge", kinds=("wrong_attribute_description",))
    results = judge_generatively(model, processor, examples, samples=3, seed=0)
    right = sum(r["choice"] == e.preferred for r, e in zip(results, examples))
    assert right >= 75, right
