"""The run-folder layer: atomic single-file writes, a JSON-lines log that repairs a cut last line, the run
header checked on resume, and full or read-only disks reported as one line with the old file kept."""

import errno
import json
import os

import pytest
import torch

from explore.errors import ExploreError
from explore.runs import (
    HEADER,
    DiskError,
    JsonlLog,
    append_jsonl,
    atomic_folder,
    atomic_path,
    check_header,
    model_fingerprint,
    read_jsonl,
    rewind_jsonl,
    write_json,
    write_text,
)


def test_write_replaces_whole_and_leaves_no_temporary_file(tmp_path):
    path = tmp_path / "summary.json"
    write_json(path, {"score": 1})
    write_json(path, {"score": 2})
    assert json.loads(path.read_text()) == {"score": 2}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.json"]


def test_a_failed_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "report.md"
    write_text(path, "old\n")
    with pytest.raises(RuntimeError), atomic_path(path) as tmp:
        tmp.write_text("half of the new")
        raise RuntimeError("killed mid-write")
    assert path.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.md"]


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS, errno.EACCES])
def test_full_or_read_only_disk_is_one_line_and_keeps_the_old_file(tmp_path, monkeypatch, code):
    path = tmp_path / "summary.json"
    write_json(path, {"score": 1})
    real_fsync = os.fsync

    def fails(fd):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "fsync", fails)
    with pytest.raises(DiskError) as caught:
        write_json(path, {"score": 2})
    monkeypatch.setattr(os, "fsync", real_fsync)
    message = str(caught.value)
    assert "\n" not in message and str(path) in message and os.strerror(code) in message
    assert "previous summary.json is kept" in message
    assert json.loads(path.read_text()) == {"score": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.json"]


def test_an_unforeseen_os_error_is_not_disguised(tmp_path, monkeypatch):
    def fails(fd):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fsync", fails)
    with pytest.raises(OSError) as caught:
        write_text(tmp_path / "x.txt", "x")
    assert not isinstance(caught.value, ExploreError) and caught.value.errno == errno.EIO


def test_atomic_folder_swaps_in_only_complete_folders(tmp_path):
    folder = tmp_path / "model"
    with atomic_folder(folder) as staging:
        (staging / "weights").write_text("v1")
    with pytest.raises(RuntimeError), atomic_folder(folder) as staging:
        (staging / "weights").write_text("v2, half")
        raise RuntimeError("killed")
    assert (folder / "weights").read_text() == "v1"
    with atomic_folder(folder) as staging:
        (staging / "weights").write_text("v2")
    assert (folder / "weights").read_text() == "v2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_jsonl_repairs_a_cut_last_line_and_appends_after_it(tmp_path):
    path = tmp_path / "predictions.jsonl"
    JsonlLog(path).append([{"id": 1}, {"id": 2}])
    with open(path, "ab") as f:
        f.write(b'{"id": 3, "out')  # a kill in the middle of an append
    assert read_jsonl(path) == [{"id": 1}, {"id": 2}]  # reading alone changes nothing
    assert path.read_bytes().endswith(b'"out')
    log = JsonlLog(path)
    assert log.records == [{"id": 1}, {"id": 2}]
    assert path.read_bytes() == b'{"id": 1}\n{"id": 2}\n'  # truncated
    log.append([{"id": 3}])
    assert read_jsonl(path) == [{"id": 1}, {"id": 2}, {"id": 3}] == log.records


def test_jsonl_drops_a_garbage_last_line_but_refuses_a_broken_middle(tmp_path):
    path = tmp_path / "results.jsonl"
    path.write_bytes(b'{"id": 1}\n\x00\x00\x00\n')  # what a power cut can leave after the last line
    assert JsonlLog(path).records == [{"id": 1}] and path.read_bytes() == b'{"id": 1}\n'
    path.write_bytes(b'{"id": 1}\nnot json\n{"id": 3}\n')
    with pytest.raises(ExploreError, match="results.jsonl: line 2 is not JSON and is not the last line"):
        JsonlLog(path)


def test_header_is_written_once_and_a_changed_key_is_refused_by_name(tmp_path):
    header = {"model": "abc123", "task": "world-vqa", "judge": None, "seed": 0}
    check_header(tmp_path, header, has_outputs=False)
    check_header(tmp_path, header, has_outputs=True)  # same run: resume
    assert json.loads((tmp_path / HEADER).read_text()) == header
    with pytest.raises(ExploreError) as caught:
        check_header(tmp_path, {**header, "model": "def456"}, has_outputs=True)
    assert f"{tmp_path} was written with model = 'abc123', but this run has model = 'def456'" in str(caught.value)
    with pytest.raises(ExploreError, match="holds outputs but no header.json"):
        check_header(tmp_path / "old", header, has_outputs=True)


def test_model_fingerprint_follows_the_weights():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    before = model_fingerprint(model)
    assert model_fingerprint(model) == before
    with torch.no_grad():
        model.bias[0] += 1e-6
    assert model_fingerprint(model) != before


def test_atomic_folder_cleans_up_after_a_killed_swap(tmp_path):
    folder = tmp_path / "model"
    with atomic_folder(folder) as staging:
        (staging / "weights").write_text("v1")
    # a kill between the two renames of a later save: the old folder aside, the new one still staging
    aside = tmp_path / ".model.old-x1"
    aside.mkdir()
    os.replace(folder, aside / "model")
    (tmp_path / ".model.tmp-x2").mkdir()
    (tmp_path / ".model.tmp-x2" / "weights").write_text("v2, maybe half")
    with pytest.raises(RuntimeError), atomic_folder(folder):
        assert (folder / "weights").read_text() == "v1"  # put back before anything else happens
        raise RuntimeError("stop")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_append_jsonl_truncates_a_cut_line_without_reading_the_log(tmp_path):
    path = tmp_path / "train_log.jsonl"
    append_jsonl(path, [{"step": 1}])
    with open(path, "ab") as f:
        f.write(b'{"step": 2, "lo')
    append_jsonl(path, [{"step": 2}, {"step": 3}])
    assert path.read_bytes() == b'{"step": 1}\n{"step": 2}\n{"step": 3}\n'
    path.write_bytes(b'{"step": 1, "cut with no newline at all')
    append_jsonl(path, [{"step": 1}])
    assert read_jsonl(path) == [{"step": 1}]


def test_rewind_keeps_the_log_up_to_the_checkpoint(tmp_path):
    path = tmp_path / "train_log.jsonl"
    append_jsonl(path, [{"step": 1, "loss": 2.0}, {"step": 2, "validation": {}}, {"step": 3, "loss": 1.0}])
    rewind_jsonl(path, 2)
    assert read_jsonl(path) == [{"step": 1, "loss": 2.0}, {"step": 2, "validation": {}}]
    rewind_jsonl(path, 0)  # a fresh start
    assert read_jsonl(path) == []
    rewind_jsonl(tmp_path / "absent.jsonl", 5)
    assert not (tmp_path / "absent.jsonl").exists()


def test_outputs_get_the_usual_permissions_not_those_of_a_temporary_file(tmp_path):
    mask = os.umask(0o022)
    try:
        path = write_text(tmp_path / "summary.json", "{}")
        with atomic_folder(tmp_path / "model") as staging:
            (staging / "weights").write_text("w")
    finally:
        os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o644  # not mkstemp's 0600
    assert (tmp_path / "model").stat().st_mode & 0o777 == 0o755  # not mkdtemp's 0700


def test_a_header_without_outputs_is_rewritten(tmp_path):
    check_header(tmp_path, {"judge": "generative"}, has_outputs=False)  # a run that stopped before any output
    check_header(tmp_path, {"judge": "likelihood"}, has_outputs=False)  # may start again with other settings
    assert json.loads((tmp_path / HEADER).read_text()) == {"judge": "likelihood"}
    with pytest.raises(ExploreError, match="judge = 'likelihood', but this run has judge = 'generative'"):
        check_header(tmp_path, {"judge": "generative"}, has_outputs=True)
