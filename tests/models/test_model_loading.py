import json
import os
import pickle

import pytest
import torch

from explore.errors import ExploreError
from explore.models import loading
from explore.models.collate import collate
from explore.models.generate import generate_answers
from explore.models.loading import load_model, save_model
from explore.models.presets import list_presets


def _one_line_error(name, match) -> str:
    with pytest.raises(ExploreError) as error:
        load_model(name)
    message = str(error.value)
    assert "\n" not in message
    assert match in message
    return message


def test_save_load_round_trip_gives_identical_logits_and_answers(tiny, examples, tmp_path):
    folder = save_model(tiny.model, tiny.processor, tmp_path / "model")
    assert (folder / "model.safetensors").is_file() and not list(folder.glob("*.bin"))
    model, processor = load_model(folder)
    assert not model.training
    for batch_model, batch_processor in ((tiny.model, tiny.processor), (model, processor)):
        batch = collate(examples, batch_processor, with_labels=True, max_length=16, decoder_only=tiny.decoder_only)
        with torch.no_grad():
            logits = batch_model(**batch).logits
        if batch_model is tiny.model:
            expected, expected_batch = logits, batch
    assert all(torch.equal(batch[name], expected_batch[name]) for name in batch)
    assert torch.equal(logits, expected)
    assert processor.num_query_tokens == tiny.processor.num_query_tokens
    assert processor.tokenizer.padding_side == tiny.tokenizer.padding_side
    answers = generate_answers(model, processor, examples, max_length=16, max_new_tokens=3)
    assert answers == generate_answers(tiny.model, tiny.processor, examples, max_length=16, max_new_tokens=3)


def test_save_replaces_an_existing_folder_and_leaves_no_temporary_folders(tiny_factory, tmp_path):
    first, second = tiny_factory("tiny-t5", seed=0), tiny_factory("tiny-t5", seed=1)
    save_model(first.model, first.processor, tmp_path / "model")
    save_model(second.model, second.processor, tmp_path / "model")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    model, _ = load_model(tmp_path / "model")
    assert torch.equal(model.query_tokens, second.model.query_tokens)


def test_missing_folder_is_a_one_line_error(tmp_path):
    _one_line_error(tmp_path / "nope", "does not exist")


def test_folder_without_config_is_a_one_line_error(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"")
    _one_line_error(tmp_path, "config.json")


class _Exploit:
    """Unpickling this creates the file ``marker``: a stand-in for a payload that runs code."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("layout", ["folder/pytorch_model.bin", "folder/model.pt", "folder/weights.pkl", "model.pt"])
def test_pickle_weights_are_refused_without_unpickling(tmp_path, layout):
    """A pickle that would create a file when loaded: the file must not appear, and the message says why and how."""
    marker = tmp_path / "pwned.txt"
    payload = tmp_path / layout
    payload.parent.mkdir(exist_ok=True)
    (tmp_path / "folder" / "config.json").parent.mkdir(exist_ok=True)
    (tmp_path / "folder" / "config.json").write_text(json.dumps({"model_type": "instructblip"}))
    payload.write_bytes(pickle.dumps(_Exploit(marker)))
    pickle.loads(payload.read_bytes()).close()  # prove the pickle is live
    assert marker.exists()
    marker.unlink()
    message = _one_line_error(payload.parent if layout.startswith("folder/") else payload, payload.name)
    assert "arbitrary code" in message and "save_pretrained" in message and "safetensors" in message
    assert not marker.exists()


def test_a_weights_file_instead_of_its_folder_is_a_one_line_error(tiny_factory, tmp_path):
    tiny = tiny_factory("tiny-t5")
    folder = save_model(tiny.model, tiny.processor, tmp_path / "model")
    _one_line_error(folder / "model.safetensors", "pass the folder that holds config.json")


def test_code_shipped_with_a_checkpoint_never_runs(tiny_factory, tmp_path):
    """A folder whose config, tokenizer and processor configs point at custom code (``auto_map``, the way
    ``trust_remote_code`` models ship) loads with transformers' own InstructBLIP classes; the shipped code
    is never imported."""
    tiny = tiny_factory("tiny-t5")
    folder = save_model(tiny.model, tiny.processor, tmp_path / "model")
    marker = tmp_path / "remote code ran"
    (folder / "shipped.py").write_text(
        f"import pathlib\npathlib.Path({str(marker)!r}).write_text('ran')\n"
        "from transformers import InstructBlipForConditionalGeneration as Model, PreTrainedTokenizerFast as Tok\n"
        "from transformers import InstructBlipProcessor as Processor\n"
    )
    for name, key, value in (("config.json", "AutoModelForImageTextToText", "shipped.Model"),
                             ("tokenizer_config.json", "AutoTokenizer", ["shipped.Tok", None]),
                             ("processor_config.json", "AutoProcessor", "shipped.Processor")):  # fmt: skip
        path = folder / name
        config = json.loads(path.read_text()) if path.is_file() else {}
        path.write_text(json.dumps({**config, "auto_map": {key: value}}))
    model, processor = load_model(folder)
    assert not marker.exists()
    assert type(model).__module__.startswith("transformers.")


def test_nan_weights_are_refused_and_named(tiny_factory, tmp_path):
    tiny = tiny_factory("tiny-llama")
    with torch.no_grad():
        tiny.model.language_projection.weight[0, 0] = float("nan")
    save_model(tiny.model, tiny.processor, tmp_path / "model")
    _one_line_error(tmp_path / "model", "language_projection.weight")


def test_missing_embedded_model_says_how_to_create_it(monkeypatch, tmp_path):
    monkeypatch.setattr(loading, "embedded_folder", lambda: tmp_path / "embedded" / "shapes-small")
    _one_line_error("embedded", "explore pretrain --config configs/pretrain/shapes-judge-14.yaml")


def test_embedded_name_loads_the_packaged_folder(monkeypatch, tiny_factory, tmp_path):
    tiny = tiny_factory("tiny-t5")
    folder = save_model(tiny.model, tiny.processor, tmp_path / "shapes-small")
    monkeypatch.setattr(loading, "embedded_folder", lambda: folder)
    model, _ = load_model("embedded")
    assert torch.equal(model.query_tokens, tiny.model.query_tokens)


def test_unknown_name_lists_the_presets():
    message = _one_line_error("tiny-t5", "unknown model 'tiny-t5'")
    assert all(name in message for name in list_presets())


@pytest.mark.skipif(os.environ.get("HF_HUB_OFFLINE") != "1", reason="needs HF_HUB_OFFLINE=1 to stay offline")
def test_uncached_hub_id_offline_is_a_one_line_error():
    _one_line_error("explore-tests/not-a-real-model", "explore-tests/not-a-real-model")
