"""Process-wide settings belong to the ``explore`` entry point, never to ``import explore``."""

import json
import logging
import os
import subprocess
import sys

from explore.cli.env import QUIET_LOGGERS, configure_process

PROBE = """
import json, logging, os, sys
before = {name: logging.getLogger(name).level for name in sys.argv[1:]}
import explore, explore.models.loading, explore.eval.runner
print(json.dumps({"omp": os.environ.get("OMP_WAIT_POLICY"),
                  "levels": {name: logging.getLogger(name).level for name in sys.argv[1:]}, "before": before}))
"""


def test_importing_explore_sets_no_environment_variable_and_no_logger_level():
    env = {key: value for key, value in os.environ.items() if key != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", PROBE, *QUIET_LOGGERS], env=env, capture_output=True, text=True,
                         check=True)  # fmt: skip
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen["omp"] is None
    assert seen["levels"] == seen["before"]


def test_the_entry_point_sets_a_passive_omp_wait_and_quiets_backend_notices(monkeypatch):
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    for name in QUIET_LOGGERS:
        monkeypatch.setattr(logging.getLogger(name), "level", logging.NOTSET)
    configure_process()
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    assert all(logging.getLogger(name).level == logging.ERROR for name in QUIET_LOGGERS)


def test_the_users_omp_wait_policy_wins(monkeypatch):
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    configure_process()
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"


def test_the_console_script_configures_the_process_before_the_app_runs(monkeypatch):
    import explore.cli

    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    seen = []
    monkeypatch.setattr(explore.cli, "_run_app", lambda: seen.append(os.environ.get("OMP_WAIT_POLICY")))
    explore.cli.main()
    assert seen == ["PASSIVE"]
