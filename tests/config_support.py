"""Shared by the configuration tests: the seed examples and the `hakit` entry point."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

from hakit.cli import main as cli_main

DATA = Path(__file__).parent / "data" / "config"
SEEDS = DATA / "seeds"
REPO = Path(__file__).resolve().parent.parent

# Only the configuration verbs are registered: these tests must keep working when another
# verb's module cannot be imported (the compiled frame codec not built, for one).
CONFIG_VERBS = ("hakit.cli.cmd_config", "hakit.cli.cmd_cluster")


@dataclass(frozen=True)
class Run:
    code: int
    out: str
    err: str

    @property
    def err_lines(self) -> list[str]:
        return self.err.splitlines()


def hakit(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> Run:
    """Run `hakit ARGV...` through its entry point, in this process."""
    capsys.readouterr()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cli_main, "COMMAND_MODULES", CONFIG_VERBS)
        code = cli_main.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return Run(code, out, err)


@pytest.fixture(autouse=True)
def isolated_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every hakit path (the installed cluster.xml above all) under this test's directory:
    `config check` also reads the node's cluster.xml, never the host's."""
    monkeypatch.setenv("HAKIT_ROOT", str(tmp_path / "root"))


def write(tmp_path: Path, text: str, name: str = "userconfig.xml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path
