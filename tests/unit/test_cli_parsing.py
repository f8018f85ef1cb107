"""CLI pieces that need no store: app lookup, URL redaction, time formatting, help pages."""

from __future__ import annotations

from pathlib import Path

import pytest

from conveyor import ConfigurationError, Conveyor
from conveyor.cli import cli, load_app, main
from conveyor.cli.output import age
from conveyor.urls import redact_url


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://alice:s3cret@db:5432/jobs", "postgresql://alice:***@db:5432/jobs"),
        ("postgresql://alice@db/jobs", "postgresql://alice@db/jobs"),
        ("sqlite:////var/lib/conveyor.db", "sqlite:////var/lib/conveyor.db"),
    ],
)
def test_printed_urls_never_show_a_password(url: str, shown: str) -> None:
    assert redact_url(url) == shown


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(None, "-"), (-3, "0.0s"), (0.42, "0.4s"), (42, "42s"), (184, "3m 04s"), (7500, "2h 05m"),
     (3 * 86400 + 4 * 3600, "3d 4h")],
)
def test_ages_read_at_a_glance(seconds: float | None, text: str) -> None:
    assert age(seconds) == text


def test_load_app_finds_the_instance_in_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "unit_cli_project.py").write_text(
        "from conveyor import Conveyor\nmain = Conveyor('sqlite:///x.db')\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    found = load_app("unit_cli_project:main")
    assert isinstance(found, Conveyor) and found.url == "sqlite:///x.db"
    with pytest.raises(ConfigurationError, match="has no 'app'"):
        load_app("unit_cli_project")  # the attribute defaults to ``app``


def test_every_command_has_a_working_help_page(capsys: pytest.CaptureFixture[str]) -> None:
    paths = [[]] + [[name] for name in cli.commands]
    paths += [["jobs", n] for n in ("list", "show", "retry", "discard", "cancel")]
    paths += [["queues", n] for n in ("list", "pause", "resume")]
    for path in paths:
        assert main([*path, "--help"]) == 0, path
        assert "Usage: conveyor" in capsys.readouterr().out
