"""The README's examples run as written."""

from __future__ import annotations

import os
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


def test_backup_example_runs_on_the_library_examples_store(tmp_path: Path) -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    (backup,) = [b for b in blocks if "import_file" in b]
    for code in (blocks[0], backup):
        result = subprocess.run(
            [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["1", "1"]
    assert (tmp_path / "restored.db").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".backup")] == []


def test_agents_sdk_example_runs(tmp_path: Path) -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    (code,) = [b for b in blocks if "ThreadlineSession" in b]
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() in (["trains", "2"],)


def test_demo_command_runs(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "threadline", "demo", "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "search 'temples': 3 hits, all in 'Trip to Kyoto'" in result.stdout


def test_demo_without_a_data_dir_leaves_the_default_one_alone(tmp_path: Path) -> None:
    env = {**os.environ, "HOME": str(tmp_path), "XDG_DATA_HOME": str(tmp_path / "data")}
    env.pop("THREADLINE_DATA_DIR", None)

    result = subprocess.run(
        [sys.executable, "-m", "threadline", "demo"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )

    assert result.returncode == 0, result.stderr
    assert "search 'temples': 3 hits" in result.stdout
    assert "a temporary store, now removed" in result.stdout
    assert not (tmp_path / "data").exists() and not (tmp_path / ".local").exists()


async def test_pasted_host_config_starts_a_working_server(tmp_path: Path) -> None:
    import json

    import anyio
    from mcp import Client, StdioServerParameters

    snippet = re.search(r"```json\n(.*?)```", README.read_text(), re.S)
    assert snippet is not None
    server = json.loads(snippet.group(1))["mcpServers"]["threadline"]
    command = Path(sys.executable).parent / server["command"]  # the installed console script
    assert command.exists()
    params = StdioServerParameters(
        command=str(command), args=[*server["args"], "--data-dir", str(tmp_path)]
    )
    with anyio.fail_after(30):
        async with Client(params) as client:
            result = await client.call_tool("create_session", {"title": "from the README"})
            assert not result.is_error
    assert (tmp_path / "local.db").exists()
