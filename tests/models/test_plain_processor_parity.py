"""Every folder explore saves behaves through the plain libraries as it does through explore.

lmms-eval and VLMEvalKit load an InstructBLIP with ``from_pretrained``, feed it through
``InstructBlipProcessor`` one example at a time and call ``generate``. These tests do exactly that on the
shipped model, on a compressed folder and on a fine-tuned (merged) folder, and check (a) the processor
builds the very input ids explore's collate builds (no missing ``</s>``, no truncation left in a saved
tokenizer, long prompts whole) and (b) the greedy answers equal explore's batched answers.
"""

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from transformers import InstructBlipForConditionalGeneration, InstructBlipProcessor

from explore.compress.queries import prune_queries
from explore.data.example import Example
from explore.data.judge_prompt import judge_prompt
from explore.models.build import build_model, build_processor
from explore.models.collate import collate
from explore.models.generate import cache_kwargs, generate_answers
from explore.models.loading import embedded_folder, load_model, save_model
from explore.models.presets import get_preset
from explore.models.tokenizer import build_word_tokenizer
from explore.world.examples import world_examples
from explore.world.vocabulary import vocabulary


def plain_answers(folder: Path, examples: list[Example], max_new_tokens: int) -> tuple[list[str], list[dict]]:
    """Answers as lmms-eval's ``instructblip`` model gets them: batch size 1, processor, generate."""
    model = InstructBlipForConditionalGeneration.from_pretrained(folder).eval()
    processor = InstructBlipProcessor.from_pretrained(folder)
    answers, inputs_seen = [], []
    for example in examples:
        inputs = processor(images=example.load_image(), text=example.prompt, return_tensors="pt")
        with torch.no_grad():
            output = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                                    **cache_kwargs(model))  # fmt: skip
        if model.config.use_decoder_only_language_model:
            output = output[:, inputs["input_ids"].shape[1] :]
        answers.append(processor.tokenizer.decode(output[0], skip_special_tokens=True).strip())
        inputs_seen.append(inputs)
    return answers, inputs_seen


def assert_same_inputs(folder: Path, examples: list[Example], inputs_seen: list[dict]) -> None:
    model, processor = load_model(folder)
    decoder_only = bool(model.config.use_decoder_only_language_model)
    for example, plain in zip(examples, inputs_seen, strict=True):
        ours = collate([example], processor, with_labels=False, max_length=512, decoder_only=decoder_only)
        for name in ("input_ids", "attention_mask", "qformer_input_ids", "qformer_attention_mask"):
            assert torch.equal(ours[name], plain[name]), (name, example.prompt[:60], ours[name], plain[name])
        assert torch.allclose(ours["pixel_values"], plain["pixel_values"])


def long_judge_examples(n: int, resolution: int) -> list[Example]:
    """World judge pairs in VL-RewardBench's official prompt (~210-290 tokens)."""
    pairs = world_examples("test", n, "judge", resolution=resolution)
    return [replace(p, prompt=judge_prompt(p.prompt, *p.responses)) for p in pairs]


@pytest.fixture(scope="module")
def shipped_examples():
    vqa = world_examples("test", 10, "vqa")
    captions = world_examples("test", 3, "caption")
    return vqa, captions, long_judge_examples(3, 64)


def test_shipped_folder_through_the_plain_processor_gives_explores_inputs_and_answers(shipped_examples):
    folder = embedded_folder()
    saved = json.loads((folder / "tokenizer.json").read_text())
    assert saved["truncation"] is None and saved["padding"] is None
    assert "max_length" not in json.loads((folder / "tokenizer_config.json").read_text())
    vqa, captions, judged = shipped_examples
    model, processor = load_model("embedded")
    for examples, new_tokens in ((vqa, 6), (captions, 64), (judged, 64)):
        plain, inputs_seen = plain_answers(folder, examples, new_tokens)
        assert_same_inputs(folder, examples, inputs_seen)
        with torch.no_grad():
            ours = generate_answers(model, processor, examples, max_length=512, max_new_tokens=new_tokens)
        assert plain == ours


def _tiny(family: str, tmp_path: Path, name: str) -> Path:
    words = vocabulary()
    preset = get_preset(f"tiny-{family}")
    tokenizer, qformer_tokenizer = build_word_tokenizer(words), build_word_tokenizer(words, image_token=False)
    model, processor = build_model(preset, tokenizer, seed=0), build_processor(preset, tokenizer, qformer_tokenizer)
    # a call with truncation, as training makes: the fast tokenizer keeps it in its backend
    processor.tokenizer(["a b c d e f g h i j"], truncation=True, max_length=4)
    return save_model(model, processor, tmp_path / name)


@pytest.mark.parametrize("family", ["t5", "llama"])
def test_saved_compressed_and_tuned_folders_work_through_the_plain_processor(family, tmp_path):
    folder = _tiny(family, tmp_path, "base")
    saved = json.loads((folder / "tokenizer.json").read_text())
    assert saved["truncation"] is None, "a call's truncation state was saved with the tokenizer"
    model, processor = load_model(folder)
    # and once more after loading: transformers 5 copies a loaded truncation block into init_kwargs
    processor.tokenizer(["a b c d e f g h i j"], truncation=True, max_length=4)
    small, small_processor = prune_queries(model, processor, 2, "even")  # a compressed folder
    compressed = save_model(small, small_processor, tmp_path / "compressed")
    with torch.no_grad():  # a fully tuned (merged) folder: other weights, same format
        for parameter in model.language_model.parameters():
            parameter.add_(0.01 * torch.randn_like(parameter))
    tuned = save_model(model, processor, tmp_path / "tuned")
    # a prompt of ~40 words: longer than the 4 tokens of the call above and than collate's training 32
    long_prompt = ("Use the provided image to answer the question: is the red circle left of the blue square "
                   "and is there a green star at the top left of the image or not? "
                   "Provide your answer as short as possible:")  # fmt: skip
    examples = world_examples("test", 4, "vqa", resolution=16)
    examples.append(replace(examples[0], id="long", prompt=long_prompt))
    for folder in (compressed, tuned):
        for config in (folder / "tokenizer_config.json", folder / "qformer_tokenizer" / "tokenizer_config.json"):
            assert "max_length" not in json.loads(config.read_text()), config
        plain, inputs_seen = plain_answers(folder, examples, max_new_tokens=5)
        assert_same_inputs(folder, examples, inputs_seen)
        assert inputs_seen[-1]["input_ids"].shape[1] > 40
        loaded, loaded_processor = load_model(folder)
        with torch.no_grad():
            ours = generate_answers(loaded, loaded_processor, examples, max_length=512, max_new_tokens=5)
        assert plain == ours
