"""The generative judge maps each sampled verdict back to the stored order before the majority vote.

The model is stubbed: ``generate`` returns one row per prompt and the tokenizer "decodes" it into a
verdict chosen by a stub judge that reads the prompt it was shown, so the test controls every sample.
"""

from types import SimpleNamespace

import pytest
import torch

from explore.data.example import Example
from explore.eval import generative_judge
from explore.eval.generative_judge import judge_generatively

GOOD, BAD = "RESPONSE-ALPHA the red circle", "RESPONSE-BETA the blue square"
SAMPLES = 8


class StubProcessor:
    """Holds the prompts of the last batch; ``batch_decode`` answers each with ``judge(prompt)``."""

    def __init__(self, judge):
        self.judge, self.prompts = judge, []
        self.tokenizer = SimpleNamespace(batch_decode=self.batch_decode)

    def batch_decode(self, output, skip_special_tokens):
        return [self.judge(self.prompts[int(row[0])]) for row in output]


class StubModel:
    config = SimpleNamespace(use_decoder_only_language_model=False)
    device, dtype = torch.device("cpu"), torch.float32

    def generate(self, input_ids, pixel_values, **settings):
        assert settings["do_sample"] and settings["temperature"] == generative_judge.TEMPERATURE
        return input_ids  # row i "generates" the verdict for prompt i


@pytest.fixture
def stub(monkeypatch):
    def judge_with(judge):
        processor = StubProcessor(judge)

        def generation_inputs(prompts, processor_, max_length, decoder_only):
            processor.prompts = [p.prompt for p in prompts]
            return {"input_ids": torch.arange(len(prompts))[:, None], "pixel_values": torch.zeros(len(prompts), 3, 2, 2)}

        monkeypatch.setattr(generative_judge, "generation_inputs", generation_inputs)
        monkeypatch.setattr(generative_judge, "cache_kwargs", lambda model: {})
        return StubModel(), processor

    return judge_with


def pair(example_id: str, responses: list[str]) -> Example:
    return Example(id=example_id, task="judge", image=None, prompt="Which answer describes the image?",
                   responses=responses, preferred=responses.index(GOOD))  # fmt: skip


def shown_first(prompt: str, response: str) -> bool:
    other = BAD if response == GOOD else GOOD
    return prompt.index(response) < prompt.index(other)


def swapped(example: Example, sample: int) -> bool:
    return generative_judge._swapped(example, sample, seed=0)


EXAMPLES = [pair("good-first", [GOOD, BAD]), pair("good-second", [BAD, GOOD])]


def test_both_display_orders_occur_in_the_samples():
    for example in EXAMPLES:
        assert {swapped(example, sample) for sample in range(SAMPLES)} == {False, True}


def test_a_judge_that_prefers_the_good_answer_votes_for_its_stored_index_in_both_orders(stub):
    model, processor = stub(lambda prompt: f"Overall Judgment: Answer {1 if shown_first(prompt, GOOD) else 2} is better")
    results = judge_generatively(model, processor, EXAMPLES, samples=SAMPLES, seed=0)
    for example, result in zip(EXAMPLES, results):
        assert result["votes"] == [example.preferred] * SAMPLES
        assert result["choice"] == example.preferred


def test_answer_1_in_a_swapped_sample_is_the_stored_second_response(stub):
    model, processor = stub(lambda prompt: "Overall Judgment: Answer 1 is better")  # a judge with position bias
    results = judge_generatively(model, processor, EXAMPLES, samples=SAMPLES, seed=0)
    for example, result in zip(EXAMPLES, results):
        assert result["votes"] == [1 if swapped(example, sample) else 0 for sample in range(SAMPLES)]
        shown = [shown_first(prompt, example.responses[0]) for prompt in processor.prompts[:SAMPLES]]
        if example is EXAMPLES[0]:  # the prompts really were shown in the order the swap says
            assert shown == [not swapped(example, sample) for sample in range(SAMPLES)]


def test_answer_2_maps_the_other_way_and_unparsed_samples_vote_none(stub):
    texts = iter(["Overall Judgment: Answer 2 is better", "I cannot tell"] * SAMPLES)
    model, processor = stub(lambda prompt: next(texts))
    example = EXAMPLES[0]
    [result] = judge_generatively(model, processor, [example], samples=4, seed=0)
    expected = [0 if swapped(example, 0) else 1, None, 0 if swapped(example, 2) else 1, None]
    assert result["votes"] == expected
    assert result["choice"] is None  # two unparsed of four: no strict majority
