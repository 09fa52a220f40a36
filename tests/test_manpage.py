"""The man pages generated from the parser and the schema: complete, and clean for groff/man."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from roaming_homes import cli, config, manpage
from roaming_homes.errors import ExitCode

ROOT = Path(__file__).resolve().parents[1]


def _plain(page: str) -> str:
    """A page's text with the roff escapes this generator writes undone (no groff needed)."""
    text = re.sub(r"\\f[BIR]", "", page).replace("\\-", "-").replace("\\&", "")
    return re.sub(r"\\\[u([0-9A-F]{4})\]", lambda m: chr(int(m.group(1), 16)), text)


def _render(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["groff", "-man", "-Tutf8", "-ww", str(path)], capture_output=True,
                          text=True, timeout=60, check=False,
                          env={**os.environ, "LANG": "C.UTF-8"})


@pytest.fixture(scope="module")
def pages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The pages as the packages make them: `python3 -m roaming_homes.manpage DIR`."""
    out = tmp_path_factory.mktemp("man")
    result = subprocess.run([sys.executable, "-m", "roaming_homes.manpage", str(out)],
                            capture_output=True, text=True, timeout=60, check=False,
                            env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["roaming-homes.1", "roaming-homes.toml.5"]
    return {p.name: p for p in out.iterdir()}


def test_every_subcommand_and_option_is_in_the_command_page(pages: dict[str, Path]) -> None:
    page = pages["roaming-homes.1"].read_text()
    assert page.startswith('.TH "ROAMING-HOMES" "1" ')
    text = _plain(page)
    found = list(manpage.commands(cli.build_parser()))
    names = {" ".join(words) for words, _, _ in found}
    assert {"sync", "status", "check", "conflicts", "resolve", "restore", "config",
            "config show", "config sample", "config import-legacy", "daemon"} <= names
    for words, _, parser in found:
        assert f'.SS "{" ".join(words)}"' in text
        for action in parser._actions:
            for option in action.option_strings:
                if option not in ("-h", "--help"):
                    assert option in text, (words, option)
    assert "--user NAME" in text and "--config FILE" in text
    for code in ExitCode:
        assert f"\n{int(code)}\n" in text, code


def test_every_config_key_is_in_the_file_format_page(pages: dict[str, Path]) -> None:
    page = pages["roaming-homes.toml.5"].read_text()
    assert page.startswith('.TH "ROAMING-HOMES.TOML" "5" ')
    text = _plain(page)
    for section, keys in config.SCHEMA.items():
        assert f'.SH "[{section}]"' in text
        for key, spec in keys.items():
            assert f"({section}.{key}, {spec.type})" in text
            if isinstance(spec.check, config.Range):
                assert f"Range: {spec.check}." in text


def test_every_exit_code_is_described() -> None:
    assert set(manpage.EXIT_STATUS) == set(ExitCode)


def test_escaping() -> None:
    assert manpage.escape(".hidden -x a\\b …") == "\\&.hidden \\-x a\\eb \\[u2026]"
    assert manpage.escape("'quoted") == "\\&'quoted"


@pytest.mark.skipif(shutil.which("groff") is None, reason="groff not installed (groff-base)")
def test_groff_renders_both_pages_without_warnings(pages: dict[str, Path]) -> None:
    for path in pages.values():
        result = _render(path)
        assert result.returncode == 0 and result.stderr == "", (path.name, result.stderr)
    command = _render(pages["roaming-homes.1"]).stdout
    assert "roaming-homes check [-h] [--json] [--user NAME]" in re.sub(r".\x08", "", command)


@pytest.mark.skipif(shutil.which("man") is None, reason="man not installed (man-db)")
def test_man_reads_both_pages_without_warnings(pages: dict[str, Path]) -> None:
    for path in pages.values():
        result = subprocess.run(["man", "--warnings", "-l", str(path)], capture_output=True,
                                text=True, timeout=60, check=False,
                                env={**os.environ, "MANPAGER": "cat", "MANWIDTH": "80"})
        assert result.returncode == 0 and result.stderr == "", (path.name, result.stderr)
        assert "roaming-homes" in result.stdout
