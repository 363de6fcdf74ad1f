import pytest
import torch

from explore.errors import ExploreError
from explore.models.collate import IGNORE_INDEX, collate, generation_inputs


def _ids(tokenizer, text):
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def test_t5_layout_placeholders_prompt_eos_and_answer_labels(tiny_factory, examples):
    tiny = tiny_factory("tiny-t5")
    tok, n = tiny.tokenizer, tiny.processor.num_query_tokens
    examples[1].answers = ["blue square"]
    batch = collate(examples, tiny.processor, with_labels=True, max_length=16, decoder_only=False)
    image_id = tiny.model.config.image_token_id
    row = batch["input_ids"][1].tolist()  # "colour?", the shortest prompt: right padded
    assert row[: n + 3] == [image_id] * n + _ids(tok, "colour?") + [tok.eos_token_id]
    assert set(row[n + 3 :]) == {tok.pad_token_id}
    assert batch["attention_mask"][1].tolist() == [1] * (n + 3) + [0] * (len(row) - n - 3)
    assert batch["labels"][0].tolist() == _ids(tok, "red") + [tok.eos_token_id, IGNORE_INDEX]
    assert batch["labels"][1].tolist() == _ids(tok, "blue square") + [tok.eos_token_id]
    assert batch["qformer_input_ids"][0].tolist() == _ids(tok, "what colour is the square?")
    assert batch["pixel_values"].shape == (4, 3, 16, 16)


def test_decoder_only_training_labels_cover_only_the_answer(tiny_factory, examples):
    tiny = tiny_factory("tiny-llama")
    tok, n = tiny.tokenizer, tiny.processor.num_query_tokens
    batch = collate(examples, tiny.processor, with_labels=True, max_length=16, decoder_only=True)
    prompt = [tok.bos_token_id] + _ids(tok, "what colour is the square?")
    answer = _ids(tok, "red") + [tok.eos_token_id]
    length = n + len(prompt) + len(answer)
    assert batch["input_ids"][0, :length].tolist() == [tiny.model.config.image_token_id] * n + prompt + answer
    assert batch["labels"].shape == batch["input_ids"].shape
    assert batch["labels"][0, :length].tolist() == [IGNORE_INDEX] * (n + len(prompt)) + answer
    assert (batch["labels"][batch["attention_mask"] == 0] == IGNORE_INDEX).all()  # padding is ignored
    assert (batch["attention_mask"][:, 0] == 1).all()  # training batches pad on the right


def test_decoder_only_generation_inputs_are_left_padded_without_labels(tiny_factory, examples):
    tiny = tiny_factory("tiny-llama")
    batch = generation_inputs(examples, tiny.processor, max_length=16, decoder_only=True)
    assert "labels" not in batch
    assert (batch["attention_mask"][:, -1] == 1).all()
    assert batch["attention_mask"][1, 0] == 0 and batch["input_ids"][1, 0] == tiny.tokenizer.pad_token_id
    assert batch["qformer_attention_mask"][1].tolist()[:3] == [1, 1, 0]  # the Q-Former always pads right


def test_max_length_truncates_prompts_and_answers(tiny_factory, examples):
    tiny = tiny_factory("tiny-t5")
    batch = collate(examples, tiny.processor, with_labels=True, max_length=2, decoder_only=False)
    n = tiny.processor.num_query_tokens
    assert batch["input_ids"].shape[1] == n + 2 + 1  # placeholders + 2 prompt tokens + eos
    assert batch["qformer_input_ids"].shape[1] == 2


def test_labels_need_an_answer_and_examples_are_required(tiny, examples):
    examples[2].answers = []
    with pytest.raises(ExploreError, match="'c'"):
        collate(examples, tiny.processor, with_labels=True, max_length=16, decoder_only=tiny.decoder_only)
    batch = collate(examples, tiny.processor, with_labels=False, max_length=16, decoder_only=tiny.decoder_only)
    assert batch["input_ids"].dtype == torch.long
    with pytest.raises(ExploreError, match="empty"):
        collate([], tiny.processor, with_labels=False, max_length=16, decoder_only=tiny.decoder_only)
