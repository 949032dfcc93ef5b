"""Options of ``serve``: API key sources and the Host headers accepted by default."""

from __future__ import annotations

from pathlib import Path

import pytest

from defectscope.cli.deploy import _allowed_hosts, _api_key
from defectscope.core.errors import ConfigError


def test_api_key_from_a_file_or_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DEFECTSCOPE_API_KEY", raising=False)
    assert _api_key(None) is None
    monkeypatch.setenv("DEFECTSCOPE_API_KEY", "from-env")
    assert _api_key(None) == "from-env"
    key_file = tmp_path / "key"
    key_file.write_text("from-file\n")
    assert _api_key(key_file) == "from-file"  # the file wins, its newline is dropped
    key_file.write_text("\n")
    with pytest.raises(ConfigError, match="is empty"):
        _api_key(key_file)
    with pytest.raises(ConfigError, match="No such file"):
        _api_key(tmp_path / "missing")


def test_allowed_hosts_default_to_local_names(capsys: pytest.CaptureFixture) -> None:
    assert _allowed_hosts("127.0.0.1", []) == ["127.0.0.1", "::1", "[::1]", "localhost"]
    assert _allowed_hosts("0.0.0.0", ["line3.plant"]) == ["line3.plant"]
    assert _allowed_hosts("0.0.0.0", []) == ["*"]
    assert "--allowed-host" in capsys.readouterr().err  # and it says how to restrict it
