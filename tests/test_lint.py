"""``ruff check .`` finds nothing, with the rules in pyproject.toml ([tool.ruff.lint])."""

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def test_ruff_check_finds_nothing():
    completed = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--no-cache", "--output-format", "concise", "."],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    if completed.returncode != 0:
        pytest.fail(completed.stdout + completed.stderr, pytrace=False)
