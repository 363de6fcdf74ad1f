"""Post-training quantization into compressed-tensors checkpoints (W4A16, W8A8) on tiny T5- and LLaMA-backed
InstructBLIPs: what is quantized, save → plain ``from_pretrained`` → the same outputs, explore's load paths."""

import json
from dataclasses import replace

import pytest
import torch
from transformers import InstructBlipForConditionalGeneration

from explore.compress.precision import load_at_precision, save_quantized
from explore.compress.ptq import quantize_rtn, save_ptq
from explore.errors import ExploreError
from explore.eval.cost import disk_bytes
from explore.models.build import build_model, build_processor
from explore.models.collate import collate
from explore.models.generate import generate_answers
from explore.models.loading import load_model, save_model
from explore.models.presets import get_preset
from explore.models.quantized import from_pretrained_at_precision
from explore.models.tokenizer import build_word_tokenizer
from explore.world.examples import world_examples
from explore.world.vocabulary import vocabulary

pytest.importorskip("compressed_tensors")

CASES = [("t5", "w4a16"), ("t5", "w8a8"), ("llama", "w4a16"), ("llama", "w8a8")]


def make(family: str):
    preset = replace(get_preset(f"tiny-{family}"), name=f"tiny-{family}-ptq", lm_layers=2,
                     lm_decoder_layers=2 if family == "t5" else 0)  # fmt: skip
    words = vocabulary()
    tokenizer, qtok = build_word_tokenizer(words), build_word_tokenizer(words, image_token=False)
    return build_model(preset, tokenizer, seed=0).eval(), build_processor(preset, tokenizer, qtok)


def logits(model, processor) -> torch.Tensor:
    examples = world_examples("test", 4, "vqa", resolution=16)
    batch = collate(examples, processor, with_labels=True, max_length=32,
                    decoder_only=bool(model.config.use_decoder_only_language_model))  # fmt: skip
    with torch.no_grad():
        return model(**batch).logits


def weights_only(model):
    """The quantized model without its activation quantization (what a dequantizing reload runs)."""
    for module in model.modules():
        scheme = getattr(module, "quantization_scheme", None)
        if scheme is not None:
            scheme.input_activations = None
    return model


@pytest.mark.parametrize("family, scheme", CASES)
def test_ptq_quantizes_every_linear_but_the_head_and_reloads_with_plain_from_pretrained(family, scheme, tmp_path):
    model, processor = make(family)
    small = quantize_rtn(model, scheme)
    head = small.language_model.get_output_embeddings()
    linears = {n: m for n, m in small.named_modules() if isinstance(m, torch.nn.Linear)}
    quantized = {n for n, m in linears.items() if getattr(m, "quantization_scheme", None) is not None}
    assert quantized == {n for n, m in linears.items() if m is not head}
    assert not hasattr(model.language_model.get_output_embeddings(), "quantization_scheme")  # original untouched
    full, low = logits(model, processor), logits(small, processor)
    assert not torch.equal(full, low)
    assert torch.corrcoef(torch.stack([full.flatten(), low.flatten()]))[0, 1] > {"w4a16": 0.95, "w8a8": 0.99}[scheme]

    folder = save_ptq(small, processor, tmp_path / "m")
    config = json.loads((folder / "config.json").read_text())["quantization_config"]
    assert config["quant_method"] == "compressed-tensors"
    assert config["format"] == {"w4a16": "pack-quantized", "w8a8": "int-quantized"}[scheme]
    save_model(model, processor, tmp_path / "fp32")
    assert disk_bytes(folder) < disk_bytes(tmp_path / "fp32")
    again = InstructBlipForConditionalGeneration.from_pretrained(folder).eval()  # plain transformers, CPU
    reloaded = logits(again, processor)
    if scheme == "w4a16":
        assert torch.equal(reloaded, low)  # weights-only: the reload is the quantized model exactly
    else:  # int8 activations run in memory only; the reload has the int8 weights with float activations
        torch.testing.assert_close(reloaded, logits(weights_only(small), processor), rtol=1e-5, atol=1e-5)
        assert not torch.allclose(reloaded, low, rtol=1e-5, atol=1e-5)
    explore_model, explore_processor = load_model(folder)  # explore's load path reads the same folder
    assert torch.equal(logits(explore_model, explore_processor), reloaded)
    examples = world_examples("test", 2, "vqa", resolution=16)
    assert len(generate_answers(again, processor, examples)) == 2


@pytest.mark.parametrize("scheme", ["w4a16", "w8a8"])
def test_ptq_through_the_precision_api_the_sweep_uses(scheme, tmp_path):
    model, processor = make("t5")
    save_model(model, processor, tmp_path / "fp32")
    small, small_processor = load_at_precision(tmp_path / "fp32", scheme)  # loaded, then quantized
    assert torch.equal(logits(small, small_processor), logits(quantize_rtn(model, scheme), processor))
    folder = save_quantized(small, small_processor, tmp_path / scheme)
    again, _ = load_at_precision(folder, scheme)  # a saved checkpoint loads at its own precision only
    assert torch.isfinite(logits(again, small_processor)).all()
    with pytest.raises(ExploreError, match="saved quantized as"):
        load_at_precision(folder, "w8a8" if scheme == "w4a16" else "w4a16")


def test_ptq_errors(tmp_path):
    model, processor = make("t5")
    with pytest.raises(ExploreError, match="unknown PTQ scheme"):
        quantize_rtn(model, "w3a16")
    with pytest.raises(ExploreError, match="does not divide the input widths \\[16\\]"):
        quantize_rtn(model, "w4a16", group_size=32)
    with pytest.raises(ExploreError, match="quantize it with quantize_rtn first"):
        save_ptq(model, processor, tmp_path / "x")
    save_model(model, processor, tmp_path / "fp32")
    with pytest.raises(ExploreError, match="not while loading"):
        from_pretrained_at_precision(tmp_path / "fp32", "w4a16")


@pytest.mark.parametrize("family, scheme", CASES)
def test_gptq_through_llmcompressor_beats_rtn_and_saves_the_same_format(family, scheme, tmp_path):
    """Needs llmcompressor, which explore does not install (it pins transformers <= 5.17): skipped without it."""
    pytest.importorskip("llmcompressor")
    from explore.compress.ptq import quantize_gptq

    model, processor = make(family)
    calibration = world_examples("val", 16, "vqa", resolution=16)
    gptq = quantize_gptq(model, processor, calibration, scheme)
    rtn = quantize_rtn(model, scheme)
    full = logits(model, processor)
    names = {n for n, m in gptq.named_modules() if getattr(m, "quantization_scheme", None) is not None}
    assert names == {n for n, m in rtn.named_modules() if getattr(m, "quantization_scheme", None) is not None}
    error_gptq = (logits(gptq, processor) - full).pow(2).mean()
    error_rtn = (logits(rtn, processor) - full).pow(2).mean()
    assert 0 < error_gptq < error_rtn  # GPTQ compensates each column's rounding error on the calibration inputs
    folder = save_ptq(gptq, processor, tmp_path / "m")
    again = InstructBlipForConditionalGeneration.from_pretrained(folder).eval()
    expected = logits(gptq if scheme == "w4a16" else weights_only(gptq), processor)
    torch.testing.assert_close(logits(again, processor), expected, rtol=1e-5, atol=1e-5)


def test_gptq_without_llmcompressor_names_the_install():
    import importlib.util

    from explore.compress.ptq import quantize_gptq

    if importlib.util.find_spec("llmcompressor") is not None:
        pytest.skip("llmcompressor is installed")
    model, processor = make("t5")
    with pytest.raises(ExploreError, match="pip install --no-deps llmcompressor"):
        quantize_gptq(model, processor, world_examples("val", 2, "vqa", resolution=16), "w4a16")
    with pytest.raises(ExploreError, match="no calibration examples"):
        quantize_gptq(model, processor, [], "w4a16")
