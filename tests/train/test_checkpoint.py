"""The checkpoint module on its own: which folders count, what is kept, what is never unpickled, config checks."""

import json
import pickle
from functools import partial
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from explore.errors import ExploreError
from explore.train import checkpoint
from explore.train.checkpoint import (
    check_run,
    complete_checkpoints,
    find_checkpoint,
    first_difference,
    load_optimizer_states,
    save_checkpoint,
)

RUN = {"kind": "pretrain", "config": {"model": {"preset": "tiny-t5"}, "stages": [{"lr": 0.001}]}}


class _Exploit:
    """Unpickling this creates the file ``marker``: a stand-in for a payload that runs code."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _parts():
    layer = torch.nn.Linear(2, 2)
    optimizer = torch.optim.AdamW(layer.parameters())
    return layer, optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)


def _write(layer, folder: Path) -> None:
    save_file({k: v.contiguous() for k, v in layer.state_dict().items()}, folder / "weights.safetensors")


def _save(root: Path, step: int, keep: int = 1) -> Path:
    layer, optimizer, scheduler = _parts()
    return save_checkpoint(root, step, write_weights=partial(_write, layer), optimizer=optimizer, scheduler=scheduler,
                           state={"step": step}, run=RUN, keep=keep)  # fmt: skip


def test_only_the_newest_are_kept_and_a_newer_checkpoint_is_never_removed(tmp_path):
    for step in (2, 4, 6):
        _save(tmp_path, step, keep=2)
    assert [p.name for p in complete_checkpoints(tmp_path)] == ["step-0000004", "step-0000006"]
    _save(tmp_path, 5, keep=1)  # resumed from an older checkpoint: step 6 stays, step 4 goes
    assert [p.name for p in tmp_path.iterdir() if not p.name.startswith(".")] == ["step-0000005", "step-0000006"]
    assert find_checkpoint("latest", tmp_path).name == "step-0000006"


def test_partial_folders_are_skipped_and_cleaned(tmp_path):
    _save(tmp_path, 2)
    (tmp_path / ".tmp-step-0000004").mkdir()  # killed while writing
    (tmp_path / ".trash-step-0000001-99").mkdir()  # killed while deleting
    (tmp_path / "step-0000009").mkdir()  # no trainer_state.json: never complete
    assert find_checkpoint("latest", tmp_path).name == "step-0000002"
    _save(tmp_path, 4)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-0000004", "step-0000009"]


@pytest.mark.parametrize("name", ["optimizer.pt", "scheduler.pt"])
def test_checkpoint_states_are_never_unpickled(tmp_path, name):
    folder = _save(tmp_path, 2)
    marker = tmp_path / "pwned.txt"
    (folder / name).write_bytes(pickle.dumps(_Exploit(marker), protocol=2))  # torch.load's own protocol
    _, optimizer, scheduler = _parts()
    with pytest.raises(ExploreError) as err:
        load_optimizer_states(folder, optimizer, scheduler)
    assert name in str(err.value) and "weights_only=True" in str(err.value) and "\n" not in str(err.value)
    assert not marker.exists()


def test_a_missing_state_file_is_a_one_line_error(tmp_path):
    folder = _save(tmp_path, 2)
    (folder / "scheduler.pt").unlink()
    _, optimizer, scheduler = _parts()
    with pytest.raises(ExploreError, match="has no scheduler.pt; it is incomplete"):
        load_optimizer_states(folder, optimizer, scheduler)


def test_check_run_names_the_first_difference(tmp_path):
    folder = _save(tmp_path, 2)
    check_run(folder, RUN)
    other = {"kind": "pretrain", "config": {"model": {"preset": "tiny-t5"}, "stages": [{"lr": 0.01}]}}
    with pytest.raises(ExploreError, match=r"written with stages\[0\].lr = 0.001, but the config now says 0.01"):
        check_run(folder, other)
    with pytest.raises(ExploreError, match="is from `explore pretrain`, not `explore finetune`"):
        check_run(folder, {**RUN, "kind": "finetune"})
    (folder / checkpoint.RUN_FILE).unlink()
    with pytest.raises(ExploreError, match="has no run_config.json"):
        check_run(folder, RUN)
    assert first_difference({"a": [1, 2]}, {"a": [1, 2, 3]}) == ("a", [1, 2], [1, 2, 3])
    assert first_difference({"a": 1}, {"b": 1}) == ("a", 1, "<absent>")


def test_find_checkpoint_errors(tmp_path):
    with pytest.raises(ExploreError, match="nothing to resume .*no such folder"):
        find_checkpoint("latest", tmp_path / "none")
    with pytest.raises(ExploreError, match="nothing to resume .*no complete checkpoint"):
        find_checkpoint("latest", tmp_path)
    (tmp_path / "file.pt").write_bytes(b"")
    with pytest.raises(ExploreError, match="is a file"):
        find_checkpoint(str(tmp_path / "file.pt"), tmp_path)
    assert json.loads((_save(tmp_path, 3) / checkpoint.STATE_FILE).read_text()) == {"step": 3}
