"""Configuration: the documented file, environment overrides, and clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from threadline.config import Config, ConfigError, load_config
from threadline.paths import default_data_dir
from threadline.text import is_id, new_id

CONFIGS = Path(__file__).parent.parent / "configs"


def test_documented_config_is_the_default() -> None:
    assert load_config(CONFIGS / "threadline.toml", environ={}) == Config()


def test_no_file_means_defaults_and_env_sets_the_data_dir(tmp_path: Path) -> None:
    assert load_config(None, environ={}) == Config()
    config = load_config(None, environ={"THREADLINE_DATA_DIR": str(tmp_path)})
    assert config.data_dir == tmp_path


def test_the_environment_names_a_database_and_it_must_be_postgresql() -> None:
    url = "postgresql://role:pw@127.0.0.1:5432/threadline"
    assert load_config(None, environ={"THREADLINE_DATABASE": url}).database == url
    with pytest.raises(ConfigError, match="database"):
        load_config(None, environ={"THREADLINE_DATABASE": "mysql://role@host/db"})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("synchronous = 'SOMETIMES'", "config synchronous"),
        ("[limits]\nmax_message_chars = -1", "config limits.max_message_chars"),
        ("[[blocks]]\nlabel = 'Bad Label'", "config blocks.0.label"),
        ("unknown_key = 1", "config unknown_key"),
        ("this is not toml", "threadline.toml"),
    ],
)
def test_bad_config_names_the_key(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "threadline.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(path, environ={})


def test_missing_config_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="No such file"):
        load_config(tmp_path / "nope.toml", environ={})


@pytest.mark.parametrize("name", ["claude-desktop.json", "cursor.json", "claude-desktop-uvx.json"])
def test_host_configs_run_threadline_serve(name: str) -> None:
    server = json.loads((CONFIGS / name).read_text())["mcpServers"]["threadline"]
    assert server["args"][-1] == "serve"
    assert "threadline" in [server["command"], *server["args"]]


def test_vscode_config_runs_threadline_serve() -> None:
    server = json.loads((CONFIGS / "vscode.json").read_text())["servers"]["threadline"]
    assert (server["type"], server["command"], server["args"]) == ("stdio", "threadline", ["serve"])


@pytest.mark.parametrize(
    ("name", "key"), [("vscode-remote.json", "servers"), ("cursor-remote.json", "mcpServers")]
)
def test_remote_configs_point_at_the_mcp_endpoint_with_a_bearer_token(name: str, key: str) -> None:
    server = json.loads((CONFIGS / name).read_text())[key]["threadline"]
    assert server["url"].endswith("/mcp")
    assert server["headers"]["Authorization"].startswith("Bearer ")


def test_http_settings_load_from_the_file(tmp_path: Path) -> None:
    path = tmp_path / "threadline.toml"
    path.write_text('[http]\nhost = "0.0.0.0"\nallow_hosts = ["threadline.example"]\nport = 9000\n')
    http = load_config(path, environ={}).http
    assert (http.host, http.port, http.allow_hosts) == ("0.0.0.0", 9000, ("threadline.example",))


@pytest.mark.parametrize("value", ["", "relative/dir"])
def test_an_empty_or_relative_xdg_data_home_means_the_default(
    value: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_DATA_HOME", value)
    assert default_data_dir() == tmp_path / ".local" / "share" / "threadline"
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert default_data_dir() == tmp_path / "xdg" / "threadline"


def test_generated_ids_never_look_like_command_line_options() -> None:
    ids = [new_id() for _ in range(20_000)]
    assert not [i for i in ids if i.startswith("-")]
    assert all(len(i) == 16 and is_id(i) for i in ids) and len(set(ids)) == len(ids)
