"""Recovery fine-tuning on tiny T5- and LLaMA-backed InstructBLIPs, the same bodies for every method."""

import copy
import hashlib
import json
import re

import pytest
import torch
from peft import PeftModel
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from transformers import InstructBlipForConditionalGeneration

from explore.adapt.adapters import ADAPTER_FILES, load_adapter, merge_adapter, save_adapter
from explore.adapt.config import FinetuneConfig
from explore.adapt.finetune import finetune
from explore.adapt.targets import component_of
from explore.errors import ConfigError, ExploreError
from explore.models.collate import collate
from explore.models.generate import generate_answers
from explore.models.loading import load_model, save_model
from explore.train.checkpoint import MANIFEST_FILE

FAMILIES = ["t5", "llama"]
ADAPTER_METHODS = ["lora", "dora", "ia3"]
ADAPTER_MARKS = ("lora_", "ia3_")  # every adapter parameter name has one (DoRA: lora_magnitude_vector)


def _logits(model, processor, examples):
    decoder_only = bool(model.config.use_decoder_only_language_model)
    batch = collate(examples, processor, with_labels=True, max_length=32, decoder_only=decoder_only)
    with torch.no_grad():
        return model(**batch).logits


@pytest.mark.parametrize("method", [*ADAPTER_METHODS, "full"])
@pytest.mark.parametrize("family", FAMILIES)
def test_steps_lower_the_loss_and_train_only_the_adapter(tiny_factory, fixed_data, quick_config, family, method):
    model, processor = tiny_factory(family)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    config = quick_config(
        method, components=["qformer", "query_tokens", "lm"] if method == "full" else ["qformer", "lm"]
    )
    result = finetune(model, processor, config, data=fixed_data, progress=False)
    assert len(result.losses) == 15 and all(torch.isfinite(torch.tensor(result.losses)))
    assert result.losses[-1] < 0.9 * result.losses[0], result.losses
    trainable = [name for name, p in result.model.named_parameters() if p.requires_grad]
    assert result.trainable_parameters == sum(p.numel() for p in result.model.parameters() if p.requires_grad) > 0
    if method == "full":
        assert result.model is model and not isinstance(model, PeftModel)
        assert {component_of(name) or name for name in trainable} == {"qformer", "query_tokens", "lm"}
        changed = {name for name, p in model.named_parameters() if not torch.equal(p, before[name])}
        assert changed and all(component_of(name) in ("qformer", "lm") or name == "query_tokens" for name in changed)
    else:
        assert isinstance(result.model, PeftModel)
        assert all(any(mark in name for mark in ADAPTER_MARKS) for name in trainable), trainable
        base = dict(result.model.get_base_model().named_parameters())
        for name, weight in before.items():  # the base weights did not move (peft renames wrapped ones)
            key = (
                name
                if name in base
                else name.replace(".weight", ".base_layer.weight").replace(".bias", ".base_layer.bias")
            )
            assert torch.equal(base[key], weight), name
        assert result.trainable_parameters < 0.5 * result.total_parameters


@pytest.mark.parametrize("method", ADAPTER_METHODS)
@pytest.mark.parametrize("family", FAMILIES)
def test_adapter_saves_alone_and_reloads_onto_a_fresh_base(tiny_factory, fixed_data, quick_config, family, method,
                                                            tmp_path):  # fmt: skip
    model, processor = tiny_factory(family)
    result = finetune(model, processor, quick_config(method, steps=3), data=fixed_data, progress=False)
    expected = _logits(result.model, processor, fixed_data.examples)

    folder = save_adapter(result.model, tmp_path / "adapter")
    assert sorted(p.name for p in folder.iterdir()) == sorted(ADAPTER_FILES)
    with safe_open(str(folder / "adapter_model.safetensors"), "pt") as f:
        keys = list(f.keys())
        stored = sum(f.get_tensor(key).numel() for key in keys)
    assert keys and all(any(mark in key for mark in ADAPTER_MARKS) for key in keys), keys  # no base weights
    assert stored == result.trainable_parameters

    fresh, _ = tiny_factory(family)
    reloaded = load_adapter(fresh, folder)
    assert torch.allclose(_logits(reloaded, processor, fixed_data.examples), expected, atol=1e-6)
    assert not any(p.requires_grad for p in reloaded.parameters())


@pytest.mark.parametrize("method", ADAPTER_METHODS)
@pytest.mark.parametrize("family", FAMILIES)
def test_merge_matches_the_adapter_and_saves_as_a_plain_model(tiny_factory, fixed_data, quick_config, family, method,
                                                               tmp_path):  # fmt: skip
    model, processor = tiny_factory(family)
    result = finetune(model, processor, quick_config(method, steps=3), data=fixed_data, progress=False)
    expected = _logits(result.model, processor, fixed_data.examples)
    answers = generate_answers(result.model, processor, fixed_data.examples, max_new_tokens=4)  # on the PeftModel

    merged = merge_adapter(result.model)
    assert type(merged) is InstructBlipForConditionalGeneration
    assert not any(any(mark in name for mark in ADAPTER_MARKS) for name, _ in merged.named_parameters())
    assert torch.allclose(_logits(merged, processor, fixed_data.examples), expected, atol=1e-5)
    assert generate_answers(merged, processor, fixed_data.examples, max_new_tokens=4) == answers

    reloaded, reloaded_processor = load_model(save_model(merged, processor, tmp_path / "merged"))
    assert torch.allclose(_logits(reloaded, reloaded_processor, fixed_data.examples), expected, atol=1e-5)


def test_adapter_errors(tiny_factory, tmp_path):
    model, _ = tiny_factory("t5")
    with pytest.raises(ExploreError, match="save_adapter needs a peft model"):
        save_adapter(model, tmp_path / "a")
    with pytest.raises(ExploreError, match="merge_adapter needs a peft model"):
        merge_adapter(model)
    with pytest.raises(ExploreError, match="has no adapter_config.json, adapter_model.safetensors"):
        load_adapter(model, tmp_path)


def test_pickle_adapter_is_refused_without_unpickling(tiny_factory, fixed_data, quick_config, tmp_path):
    import pickle

    marker = tmp_path / "pwned.txt"

    class Exploit:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    model, processor = tiny_factory("t5")
    folder = save_adapter(finetune(model, processor, quick_config("lora", steps=1), data=fixed_data,
                                   progress=False).model, tmp_path / "adapter")  # fmt: skip
    (folder / "adapter_model.safetensors").unlink()
    (folder / "adapter_model.bin").write_bytes(pickle.dumps(Exploit()))
    with pytest.raises(ExploreError) as err:
        load_adapter(tiny_factory("t5")[0], folder)
    assert "adapter_model.bin" in str(err.value) and "arbitrary code" in str(err.value)
    assert not marker.exists()


def test_save_adapter_with_processor_is_self_describing(tiny_factory, fixed_data, quick_config, tmp_path):
    model, processor = tiny_factory("llama")
    result = finetune(model, processor, quick_config("lora", steps=2), data=fixed_data, progress=False)
    folder = save_adapter(result.model, tmp_path / "adapter", processor)
    names = {p.name for p in folder.iterdir()}
    assert (
        set(ADAPTER_FILES) | {"processor_config.json", "tokenizer.json"} <= names and "model.safetensors" not in names
    )
    assert json.loads((folder / "processor_config.json").read_text())["num_query_tokens"] == 4


def test_world_stream_run_is_reproducible_and_logged(tiny_factory, quick_config):
    config = quick_config("lora", steps=4, tasks={"vqa": 1, "caption": 1}, seed=3, lora_dropout=0.1)
    runs = [finetune(*tiny_factory("t5"), config, progress=False) for _ in range(2)]
    assert runs[0].losses == runs[1].losses  # same seed: same adapter init, dropout and batches
    other = finetune(*tiny_factory("t5"), config.model_copy(update={"seed": 4}), progress=False)
    assert other.losses != runs[0].losses  # another seed: another adapter init and dropout
    summary = runs[0].summary()
    assert summary["steps"] == 4 and summary["loss_start"] == pytest.approx(runs[0].losses[0], abs=1e-4)
    assert summary["distill_loss_start"] is None and summary["seconds"] > 0


def test_non_finite_loss_stops_with_one_line(tiny_factory, fixed_data, quick_config):
    model, processor = tiny_factory("t5")
    with torch.no_grad():
        model.language_projection.weight[0, 0] = float("nan")
    with pytest.raises(ExploreError) as err:
        finetune(model, processor, quick_config("lora", steps=2), data=fixed_data, progress=False)
    assert "non-finite loss" in str(err.value) and "step 1" in str(err.value) and "\n" not in str(err.value)


def test_qlora_on_cpu_is_a_clear_error(tiny_factory, quick_config):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    model, processor = tiny_factory("t5")
    with pytest.raises(ExploreError) as err:
        finetune(model, processor, quick_config("qlora", components=["lm"]), progress=False)
    assert "needs a CUDA GPU" in str(err.value) and "\n" not in str(err.value)


def test_float16_and_teacher_mismatches_are_refused(tiny_factory, quick_config):
    model, processor = tiny_factory("t5")
    with pytest.raises(ExploreError, match="float16"):
        finetune(copy.deepcopy(model).half(), processor, quick_config("lora"), progress=False)
    with pytest.raises(ConfigError, match="no teacher was given"):
        finetune(model, processor, quick_config("lora", distill_weight=0.5), progress=False)
    with pytest.raises(ConfigError, match="distill_weight is 0"):
        finetune(model, processor, quick_config("lora"), teacher=copy.deepcopy(model), progress=False)
    with pytest.raises(ExploreError, match="the teacher is the student itself"):
        finetune(model, processor, quick_config("lora", distill_weight=0.5), teacher=model, progress=False)


@pytest.mark.gpu
@pytest.mark.parametrize("family", FAMILIES)
def test_qlora_trains_lora_over_a_4bit_base(tiny_factory, fixed_data, quick_config, family, tmp_path):
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    bnb = pytest.importorskip("bitsandbytes")
    model, processor = tiny_factory(family)
    result = finetune(model, processor, quick_config("qlora", components=["lm"], steps=10), data=fixed_data,
                      progress=False)  # fmt: skip
    base = result.model.get_base_model()
    four_bit = [name for name, m in base.named_modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert four_bit and all(component_of(name) == "lm" for name in four_bit)
    assert result.losses[-1] < result.losses[0]
    folder = save_adapter(result.model, tmp_path / "adapter")
    reloaded = load_adapter(tiny_factory(family)[0], folder)  # the adapter onto the full-precision base
    assert isinstance(merge_adapter(reloaded), InstructBlipForConditionalGeneration)
    with pytest.raises(ExploreError, match="4-bit base"):
        merge_adapter(result.model)


def test_shipped_configs_validate():
    from pathlib import Path

    from explore.adapt.config import load_finetune_config

    folder = Path(__file__).resolve().parents[2] / "configs" / "finetune"
    configs = {path.stem: load_finetune_config(path) for path in folder.glob("*.yaml")}
    assert {"lora-qformer", "lora-qformer-lm", "dora-lm", "ia3-qformer", "qformer-full", "distill-lora",
            "qlora-lm"} <= set(configs)  # fmt: skip
    assert configs["qformer-full"].components == ["qformer", "query_tokens", "projection"]
    assert configs["distill-lora"].distill_weight > 0 and configs["qlora-lm"].method == "qlora"


@pytest.mark.parametrize(
    "patch, message",
    [
        ({"lora_rank": 4}, "unknown key 'lora_rank'; allowed keys here: batch_size, checkpoint_every, components,"),
        ({"method": "prefix"}, "invalid value for 'method'"),
        ({"components": ["query_tokens"]}, "query_tokens is a parameter, not a layer"),
        ({"components": ["qformer", "decoder"]}, "choose distinct ones from ['vision', 'qformer', 'projection', 'lm']"),
        ({"steps": 5, "warmup_steps": 5}, "warmup_steps (5) must be smaller than steps (5)"),
        ({"tasks": {"vqa": 1, "ocr": 1}}, "tasks must map vqa / caption / judge"),
    ],
)
def test_config_errors_are_one_line(tmp_path, patch, message):
    import yaml

    from explore.adapt.config import load_finetune_config

    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(patch))
    with pytest.raises(ConfigError) as err:
        load_finetune_config(path)
    assert message in str(err.value) and "\n" not in str(err.value), str(err.value)
    assert FinetuneConfig().method == "lora"  # every field has a default


def _trainable(model) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}


def _assert_bit_identical(expected: dict[str, torch.Tensor], actual: dict[str, torch.Tensor]) -> None:
    assert expected.keys() == actual.keys() and expected
    different = [name for name in expected if not torch.equal(expected[name], actual[name])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"


@pytest.mark.parametrize("method", [*ADAPTER_METHODS, "full"])
def test_resume_restores_the_trained_weights_not_a_fresh_adapter(tiny_factory, quick_config, tmp_path, method):
    """diffusers#12689: LoRA weights silently not reloaded on resume. Here the weights themselves are compared."""
    config = quick_config(method, steps=3, checkpoint_every=2, tasks={"vqa": 1})
    trained = finetune(*tiny_factory("t5"), config, checkpoint_dir=tmp_path, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-0000003"]  # the final step; step 2 replaced
    fresh = _trainable(finetune(*tiny_factory("t5"), config.model_copy(update={"steps": 1}), progress=False).model)
    resumed = finetune(*tiny_factory("t5"), config, checkpoint_dir=tmp_path, resume="latest", progress=False)
    _assert_bit_identical(_trainable(trained.model), _trainable(resumed.model))
    assert any(not torch.equal(fresh[name], value) for name, value in _trainable(resumed.model).items())
    assert resumed.losses == trained.losses and len(resumed.losses) == 3


@pytest.mark.parametrize("family", FAMILIES)
def test_interrupted_run_resumes_bit_identically(tiny_factory, quick_config, tmp_path, monkeypatch, family):
    """With dropout, the adapter's RNG stream must be restored too, not only weights and optimizer."""
    config = quick_config("lora", steps=6, checkpoint_every=2, lora_dropout=0.2, schedule="cosine", warmup_steps=1,
                          tasks={"vqa": 1, "caption": 1}, batch_size=2)  # fmt: skip
    reference = finetune(*tiny_factory(family), config, progress=False)
    real_step, calls = torch.optim.AdamW.step, [0]

    def step(self, *args, **kwargs):
        calls[0] += 1
        if calls[0] == 4:  # interrupted in step 4, after the checkpoint of step 2
            raise KeyboardInterrupt
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", step)
    with pytest.raises(KeyboardInterrupt):
        finetune(*tiny_factory(family), config, checkpoint_dir=tmp_path, progress=False)
    monkeypatch.setattr(torch.optim.AdamW, "step", real_step)
    assert [p.name for p in tmp_path.iterdir()] == ["step-0000002"]
    resumed = finetune(*tiny_factory(family), config, checkpoint_dir=tmp_path, resume="latest", progress=False)
    _assert_bit_identical(_trainable(reference.model), _trainable(resumed.model))
    assert resumed.losses == reference.losses


@pytest.fixture
def checkpointed(tiny_factory, quick_config, tmp_path):
    """A 2-step LoRA run with its checkpoint at step 2 under ``tmp_path / "ckpt"``; returns its config."""
    config = quick_config("lora", steps=2, checkpoint_every=2, tasks={"vqa": 1})
    finetune(*tiny_factory("t5"), config, checkpoint_dir=tmp_path / "ckpt", progress=False)
    return config


@pytest.mark.parametrize(
    "change, message",
    [
        ({"config": {"lora_r": 4}}, "finetune.lora_r = 8"),
        ({"config": {"method": "dora"}}, "finetune.method = 'lora'"),
        ({"config": {"steps": 3}}, "finetune.steps = 2"),
        ({"seed": 1}, "base_model.weights"),
        ({"family": "llama"}, "base_model.architecture"),
        ({"resume": "nope"}, "no such folder"),
        ({"dir": "empty"}, "no complete checkpoint"),
    ],
    ids=["lora-rank", "method", "steps", "other-base-weights", "other-base-architecture", "wrong-path", "empty-folder"],
)
def test_resume_failures_are_one_line_errors(checkpointed, tiny_factory, tmp_path, change, message):
    config = checkpointed.model_copy(update=change.get("config", {}))
    folder = tmp_path / "ckpt"
    if "dir" in change:
        folder = tmp_path / change["dir"]
        folder.mkdir()
    resume = str(tmp_path / change["resume"]) if "resume" in change else "latest"
    model, processor = tiny_factory(change.get("family", "t5"), seed=change.get("seed", 0))
    with pytest.raises(ExploreError) as err:
        finetune(model, processor, config, checkpoint_dir=folder, resume=resume, progress=False)
    assert message in str(err.value) and "\n" not in str(err.value), str(err.value)


def test_checkpoint_every_is_not_part_of_the_recipe():
    """It does not change the weights: a recipe's dump (the sweep's fingerprint) ignores it."""
    assert FinetuneConfig(checkpoint_every=5).model_dump() == FinetuneConfig().model_dump()


@pytest.mark.parametrize("where", ["loss", "gradient"])
def test_non_finite_values_stop_finetuning_and_keep_the_last_good_checkpoint(tiny_factory, quick_config, tmp_path,
                                                                              monkeypatch, where):  # fmt: skip
    from explore.adapt import finetune as module

    config = quick_config("lora", steps=6, checkpoint_every=2, tasks={"vqa": 1}, batch_size=2)
    calls, real_inputs = [0], module._inputs

    def inputs(*args, **kwargs):
        calls[0] += 1
        batch = real_inputs(*args, **kwargs)
        if where == "loss" and calls[0] == 3:
            batch["pixel_values"][0, 0, 0, 0] = float("nan")
        return batch

    real_clip = torch.nn.utils.clip_grad_norm_

    def clip(params, *args, **kwargs):  # a finite loss whose gradient is not
        if where == "gradient" and calls[0] == 3:
            params[0].grad[0] = float("inf")
        return real_clip(params, *args, **kwargs)

    saved, real_save = {}, module.save_checkpoint

    def save(root, step, **kwargs):
        path = real_save(root, step, **kwargs)
        saved[path.name] = {p.name: p.read_bytes() for p in path.iterdir()}
        return path

    monkeypatch.setattr(module, "_inputs", inputs)
    monkeypatch.setattr(module, "save_checkpoint", save)
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", clip)
    model, processor = tiny_factory("t5")
    with pytest.raises(ExploreError) as err:
        finetune(model, processor, config, checkpoint_dir=tmp_path, progress=False)
    assert f"non-finite {where}" in str(err.value) and "at fine-tuning step 3 " in str(err.value)
    assert "last good checkpoint is kept" in str(err.value) and "\n" not in str(err.value)
    assert [p.name for p in tmp_path.iterdir()] == ["step-0000002"]
    assert {p.name: p.read_bytes() for p in (tmp_path / "step-0000002").iterdir()} == saved["step-0000002"]
    weights = load_file(tmp_path / "step-0000002" / "trainable.safetensors")
    assert weights and all(torch.isfinite(tensor).all() for tensor in weights.values())


def test_a_non_finite_weight_in_a_checkpoint_is_refused(tiny_factory, quick_config, tmp_path):
    config = quick_config("lora", steps=2, checkpoint_every=2, tasks={"vqa": 1})
    finetune(*tiny_factory("t5"), config, checkpoint_dir=tmp_path, progress=False)
    path = tmp_path / "step-0000002" / "trainable.safetensors"
    weights = load_file(path)
    name = min(weights)
    weights[name][0] = float("nan")
    save_file(weights, path)
    # as if the run itself had written the NaN: the manifest agrees, so the NaN check (not the manifest) refuses it
    manifest = json.loads((path.parent / MANIFEST_FILE).read_text())
    manifest[path.name] = {"bytes": path.stat().st_size, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    (path.parent / MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(
        ExploreError, match=f"weight '{re.escape(name)}' contains NaN or Inf; use an earlier checkpoint"
    ):
        finetune(*tiny_factory("t5"), config, checkpoint_dir=tmp_path, resume="latest", progress=False)
