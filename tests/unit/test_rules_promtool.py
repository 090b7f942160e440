"""charts/rtvol/rules/: valid for promtool, and every alert has a promtool unit test that fires it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
RULES = sorted((ROOT / "charts/rtvol/rules").glob("*.yaml"))
TESTS = sorted((ROOT / "tests/promtool").glob("*.yaml"))
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None,
                                    reason="promtool not installed (apt-get install prometheus)")


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=60, check=False)


@needs_promtool
def test_rule_files_are_valid() -> None:
    proc = _promtool("check", "rules", *map(str, RULES))
    assert proc.returncode == 0, proc.stdout + proc.stderr


@needs_promtool
def test_promtool_rule_tests_pass() -> None:
    assert TESTS
    proc = _promtool("test", "rules", *map(str, TESTS))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_alert_has_a_firing_case_and_every_rule_file_is_tested() -> None:
    alerts = {r["alert"] for f in RULES for g in yaml.safe_load(f.read_text())["groups"]
              for r in g["rules"] if "alert" in r}
    fired: set[str] = set()
    loaded: set[Path] = set()
    for f in TESTS:
        doc = yaml.safe_load(f.read_text())
        loaded |= {(f.parent / p).resolve() for p in doc["rule_files"]}
        fired |= {t["alertname"] for case in doc["tests"] for t in case.get("alert_rule_test", ())
                  if t.get("exp_alerts")}
    assert alerts and alerts <= fired, f"alerts without a firing test: {sorted(alerts - fired)}"
    assert set(RULES) <= loaded
