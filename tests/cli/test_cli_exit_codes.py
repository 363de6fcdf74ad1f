"""Every way out of ``python -m explore.cli`` has a status that says what happened (a real subprocess each):
usage errors exit 2 with click's usage message, a failure nobody foresaw exits 1 with one line (the traceback
only with ``--debug``), Ctrl-C exits 130. Nothing that fails exits 0."""

import os
import re
import signal
import subprocess
import sys
import time

import pytest

ENV = {"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
INTERNAL = re.compile(r"^error: internal error: (\w+): (.+); rerun with --debug for the traceback$")


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "explore.cli", *args], capture_output=True, text=True, env=ENV,
                          timeout=120)  # fmt: skip


USAGE_ERRORS = {
    "unknown command": (["evall"], "No such command 'evall'"),
    "unknown option": (["sweep", "--bakend", "ray"], "No such option: --bakend"),
    "unknown subcommand": (["world", "exprot"], "No such command 'exprot'"),
    "bad value": (["world", "export", "--out", "x", "--n", "two"], "Invalid value for '--n'"),
    "missing option": (["world", "export", "--n", "2"], "Missing option '--out'"),
}


@pytest.mark.parametrize("case", list(USAGE_ERRORS))
def test_usage_error_prints_usage_and_exits_2(case, tmp_path):
    args, message = USAGE_ERRORS[case]
    r = subprocess.run([sys.executable, "-m", "explore.cli", *args], capture_output=True, text=True, env=ENV,
                       cwd=tmp_path, timeout=120)  # fmt: skip
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert r.stderr.startswith("Usage: ") and f"Error: {message}" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and r.stdout == ""
    assert list(tmp_path.iterdir()) == []  # nothing ran


def test_unforeseen_failure_is_one_line_and_exit_1():
    # Nobody wrote a check for an output folder under /proc: mkdir fails deep inside the export.
    r = run("world", "export", "--out", "/proc/nope/world", "--n", "2")
    assert r.returncode == 1, (r.returncode, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    match = INTERNAL.match(lines[0])
    assert match and match.group(1) == "FileNotFoundError" and "/proc/nope" in match.group(2), lines[0]
    assert "Traceback" not in r.stderr


def test_debug_shows_the_traceback_of_an_unforeseen_failure():
    r = run("--debug", "world", "export", "--out", "/proc/nope/world", "--n", "2")
    assert r.returncode == 1, (r.returncode, r.stderr)
    assert r.stderr.startswith("Traceback (most recent call last):")
    assert r.stderr.strip().splitlines()[-1].startswith("FileNotFoundError: ")
    assert "internal error" not in r.stderr


def test_user_error_stays_one_line_and_exit_2(tmp_path):
    r = run("world", "export", "--out", str(tmp_path / "w"), "--n", "0")
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert r.stderr == "error: --n must be a positive integer, got 0\n"


def test_help_and_success_exit_0(tmp_path):
    r = run("world", "export", "--help")
    assert r.returncode == 0 and "Usage: " in r.stdout, r.stderr
    r = run("world", "export", "--out", str(tmp_path / "w"), "--n", "1", "--resolution", "16")
    assert r.returncode == 0 and r.stderr == "", r.stderr
    assert (tmp_path / "w" / "scenes.jsonl").exists()


def test_ctrl_c_exits_130(tmp_path):
    out = tmp_path / "w"
    # A shell started in the background (nohup … &, some CI runners) hands its children SIGINT ignored, and
    # Python then installs no KeyboardInterrupt handler; restore the default so the child sees Ctrl-C as a
    # user's terminal would deliver it.
    child = subprocess.Popen([sys.executable, "-m", "explore.cli", "world", "export", "--out", str(out), "--n",
                              "100000", "--resolution", "16"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, env=ENV,
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not (out / "images").exists() or len(list((out / "images").iterdir())) < 3:  # inside the command
            assert child.poll() is None and time.monotonic() < deadline, child.communicate()
            time.sleep(0.02)
        child.send_signal(signal.SIGINT)
        _, err = child.communicate(timeout=60)
    finally:
        child.kill()
    assert child.returncode == 130, (child.returncode, err)
    assert err.strip() == "aborted" and "Traceback" not in err


NOT_WRITABLE = r"(Operation not permitted|Permission denied|Read-only file system)"


def test_a_folder_that_cannot_be_written_is_one_line_and_exit_2():
    # /sys refuses new entries even to root (a chmod-ed folder would not stop root)
    r = run("world", "export", "--out", "/sys/explore-nope/world", "--n", "2")
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert re.fullmatch(rf"error: cannot write /sys/explore-nope: {NOT_WRITABLE}; free space or choose a writable "
                        r"folder\n", r.stderr), r.stderr  # fmt: skip


def test_a_file_where_a_folder_is_needed_and_the_reverse_are_one_line_and_exit_2(tmp_path):
    (tmp_path / "notes.txt").write_text("kept\n")
    r = run("world", "export", "--out", str(tmp_path / "notes.txt"), "--n", "1")
    assert r.returncode == 2, r.stderr
    assert r.stderr == (f"error: cannot write {tmp_path / 'notes.txt' / 'images'}: a part of the path is a file, "
                        "not a folder; choose another path\n")
    r = run("world", "show", "--out", str(tmp_path / "notes.txt" / "sheet.png"), "--n", "1")
    assert r.returncode == 2, r.stderr
    assert r.stderr == (f"error: cannot write {tmp_path / 'notes.txt' / 'sheet.png'}: {tmp_path / 'notes.txt'} is a "
                        "file, not a folder; choose another path\n")
    (tmp_path / "sheet.png").mkdir()
    r = run("world", "show", "--out", str(tmp_path / "sheet.png"), "--n", "1")
    assert r.returncode == 2, r.stderr
    assert r.stderr == (f"error: cannot write {tmp_path / 'sheet.png'}: it is a folder, not a file; "
                        "choose another path\n")
    assert (tmp_path / "notes.txt").read_text() == "kept\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "sheet.png"]  # no temporary file left


def test_a_real_full_disk_is_one_line_and_exit_2(tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=30k", "tmpfs", str(disk)], capture_output=True,
                             check=False)  # fmt: skip
    if mounted.returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (not root)")
    try:  # the PNGs fill it; Pillow's OSError names no file
        r = run("world", "export", "--out", str(disk / "world"), "--n", "20", "--resolution", "32")
    finally:
        subprocess.run(["umount", str(disk)], check=False)
    assert r.returncode == 2, r.stderr
    assert r.stderr == "error: while writing: No space left on device; free space or choose a writable folder\n"


def test_a_config_that_is_not_text_is_one_line_and_exit_2(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_bytes(b"\xff\xfe\x00model: tiny")  # e.g. a UTF-16 file or a binary saved under the wrong name
    r = run("pretrain", "--config", str(config), "--output-dir", str(tmp_path / "run"))
    assert r.returncode == 2, r.stderr
    assert r.stderr == f"error: {config}: not UTF-8 text (byte 0); is it a config file?\n"
    assert not (tmp_path / "run").exists()
