"""Cost measures on tiny models: parameters, disk, memory, FLOPs and latency respond to compression."""

import statistics
import time
from dataclasses import replace

import pytest
import torch

from explore.compress.depth import drop_layers
from explore.compress.precision import quantize
from explore.eval import cost as cost_module
from explore.compress.queries import prune_queries
from explore.eval.cost import (
    TensorMemoryTracker,
    disk_bytes,
    flops_per_example,
    latency_per_example,
    parameter_counts,
    peak_memory,
    weight_bytes,
)
from explore.models.build import build_model, build_processor
from explore.models.loading import save_model
from explore.models.presets import get_preset
from explore.models.tokenizer import build_word_tokenizer
from explore.world.examples import world_examples
from explore.world.vocabulary import vocabulary


@pytest.fixture(scope="module")
def tiny():
    preset = replace(get_preset("tiny-t5"), name="tiny-t5-3", qformer_layers=3, lm_layers=3, lm_decoder_layers=3,
                     num_query_tokens=8)  # fmt: skip
    words = vocabulary()
    tokenizer, qtok = build_word_tokenizer(words), build_word_tokenizer(words, image_token=False)
    return build_model(preset, tokenizer, seed=0), build_processor(preset, tokenizer, qtok)


def test_parameter_counts(tiny):
    model, _ = tiny
    counts = parameter_counts(model)
    vocab, width = model.language_model.get_input_embeddings().weight.shape
    lm = model.language_model
    tables = 1 if lm.get_input_embeddings().weight is lm.get_output_embeddings().weight else 2  # tied: counted once
    assert counts["total"] - counts["non_embedding"] == tables * vocab * width
    for p in model.vision_model.parameters():
        p.requires_grad_(False)
    assert parameter_counts(model)["trainable"] == counts["total"] - sum(p.numel() for p in model.vision_model.parameters())
    for p in model.parameters():
        p.requires_grad_(True)


def test_disk_bytes_match_fp32_weights(tiny, tmp_path):
    model, processor = tiny
    save_model(model, processor, tmp_path / "m")
    n_bytes = disk_bytes(tmp_path / "m")
    assert 4 * parameter_counts(model)["total"] <= n_bytes < 4 * parameter_counts(model)["total"] + 64_000


def test_flops_fall_with_fewer_queries_and_layers(tiny):
    model, processor = tiny
    examples = world_examples("test", 4, "vqa", resolution=16)
    full = flops_per_example(model, processor, examples)
    fewer_queries = flops_per_example(*prune_queries(model, processor, 2, "even"), examples)
    shallower = flops_per_example(drop_layers(model, "lm_encoder", [1, 2]), processor, examples)
    assert full > 0 and fewer_queries < full and shallower < full


def test_latency_is_the_fastest_pass_per_example_at_the_process_thread_count(tiny, monkeypatch):
    """Generation stubbed to sleep per batch: 40 ms a batch until the timed passes start (warm-up, the block-size
    estimate), then 10 ms. 4 examples in batches of 2: a pass takes 20 ms, so 5 ms per example; the slow passes
    and any noise (only ever longer) are not what is reported."""
    model, processor = tiny
    examples = world_examples("test", 4, "vqa", resolution=16)
    calls, threads = [], []

    def sleepy_generate(model, processor, batch, max_new_tokens):
        calls.append(len(batch))
        threads.append(torch.get_num_threads())
        time.sleep(0.04 if len(calls) <= 3 else 0.01)
        return ["yes"] * len(batch)

    monkeypatch.setattr(cost_module, "generate_answers", sleepy_generate)
    torch.set_num_threads(2)  # the conftest's fixture puts it back to 1
    seconds = latency_per_example(model, processor, examples, batch_size=2, max_new_tokens=2, min_run_time=0.1)
    assert 0.005 <= seconds < 0.01
    assert len(calls) >= 3 + 2 * 2  # warm-up batch, estimate pass, then at least two timed passes
    assert set(calls) == {2} and set(threads) == {2}


def test_tensor_memory_tracker_counts_tensors_alive_at_once():
    weights = torch.ones(1000)  # alive before: not counted, nor are views of it
    with TensorMemoryTracker() as tracker:
        a = torch.empty(1000)  # 4,000 bytes
        b = a + 1  # 8,000 alive
        view = weights.view(10, 100)
        del a
        c = b * 2  # b and c: 8,000 alive
        del b
        assert tracker.now_bytes == 4000
    assert tracker.peak_bytes == 8000 and view.shape == (10, 100) and c.shape == (1000,)


def test_peak_memory_grows_with_batch_and_weights_shrink_with_int8(tiny):
    model, processor = tiny
    examples = world_examples("test", 8, "vqa", resolution=16)
    one, eight = peak_memory(model, processor, examples[:1]), peak_memory(model, processor, examples)
    assert 0 < one["peak_generation"] < eight["peak_generation"]
    assert one["weights"] == eight["weights"] == model.get_memory_footprint()  # fp32: the same
    small, _ = quantize(model, processor, "int8")
    assert weight_bytes(small) < 0.6 * weight_bytes(model)  # width 16: embeddings and LM head stay float32
    assert small.get_memory_footprint() == model.get_memory_footprint()  # why weight_bytes exists


def test_interleaved_latency_times_every_model_in_each_round_round_robin(monkeypatch):
    """Three stand-in models whose generation sleeps 10, 20 and 40 ms a batch, and a slow spell (+300 ms a batch)
    during the second round only: each model is timed once per round, the first model moving by one each round,
    and the median over 3 rounds leaves the spell out of every model's value."""
    from explore.eval.cost import interleaved_latency

    examples = world_examples("test", 2, "vqa", resolution=16)
    delay = {"a": 0.01, "b": 0.02, "c": 0.04}
    log = []

    def sleepy_generate(model, processor, batch, max_new_tokens):
        log.append(model)
        time.sleep(delay[model] + (0.3 if 9 < len(log) <= 15 else 0.0))  # the second round (after 3 + 6 passes)
        return ["yes"] * len(batch)

    monkeypatch.setattr(cost_module, "generate_answers", sleepy_generate)
    seconds = interleaved_latency({name: (name, None) for name in "abc"}, examples, batch_sizes=[2], rounds=3)
    # a first untimed pass per model, then per round and model one batch of 2 twice: the untimed pass (warm-up,
    # block-size estimate) and the timed one
    assert log == ["a", "b", "c"] + ["a", "a", "b", "b", "c", "c", "b", "b", "c", "c", "a", "a", "c", "c", "a", "a",
                                     "b", "b"]  # fmt: skip
    for name in "abc":  # seconds per example; the spell would add 150 ms, the margin allows 75 ms of load
        assert len(seconds[name][2]) == 3
        assert delay[name] / 2 <= statistics.median(seconds[name][2]) < delay[name] / 2 + 0.075
        assert max(seconds[name][2]) >= delay[name] / 2 + 0.15  # the slow round is there, left out by the median
