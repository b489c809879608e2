"""`make help` (the Makefile's default goal) lists every target of its ``.PHONY`` line with the ``## `` description
written above the target."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")


def _make(*args: str) -> str:
    proc = subprocess.run(
        ["make", "--no-print-directory", "-C", str(REPO), *args], capture_output=True, text=True, check=True
    )
    return proc.stdout


def test_make_help_lists_every_phony_target_with_its_description():
    phony = re.search(r"^\.PHONY:(.*)$", (REPO / "Makefile").read_text(), re.M)
    assert phony is not None
    listed = dict(re.findall(r"^  (\S+) +(\S.*)$", _make("help"), re.M))
    missing = [target for target in phony.group(1).split() if target not in listed]
    assert not missing, f"add a `## description` line above each of {missing} in the Makefile"
    assert "help" in listed and listed["run"].startswith("run the whole pipeline")


def test_make_alone_prints_the_help_and_installs_nothing():
    dry_run = _make("-n")  # the default goal's commands, printed, not run
    assert "awk" in dry_run and "pip" not in dry_run
