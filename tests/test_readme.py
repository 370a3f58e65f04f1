"""The README's examples run as written."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).parent.parent / "README.md"


def test_library_example_runs(tmp_path: Path) -> None:
    code = re.search(r"```python\n(.*?)```", README.read_text(), re.S)
    assert code is not None
    result = subprocess.run(
        [sys.executable, "-c", code.group(1)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "2 True Day 1: Fushimi **Inari** at dawn..."
    assert (tmp_path / "alice.db").exists()


def test_demo_command_runs(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "threadline", "demo", "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "search 'temples': 3 hits, all in 'Trip to Kyoto'" in result.stdout
