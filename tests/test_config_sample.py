"""`config sample`: every key with its help and default, the same text the packages install."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from roaming_homes import config
from roaming_homes.paths import Locations
from tests.support.homes import Setup

INSTALLED_SAMPLE = Path(__file__).resolve().parents[1] / "data" / "roaming-homes.toml"


def _uncommented(sample: str) -> str:
    """The sample with every `#key = value` line switched on."""
    return re.sub(r"^#(\w+ = )", r"\1", sample, flags=re.MULTILINE)


def test_packaged_sample_is_what_the_command_prints(local_user: Setup) -> None:
    result = local_user.run("config", "sample")
    assert result.returncode == 0, result.stderr
    assert result.stdout == INSTALLED_SAMPLE.read_text(), (
        "data/roaming-homes.toml is stale: regenerate it with "
        "`roaming-homes config sample > data/roaming-homes.toml`")


def test_sample_lists_every_key_with_its_help_and_default() -> None:
    sample = INSTALLED_SAMPLE.read_text()
    values = tomllib.loads(_uncommented(sample))
    for section, keys in config.SCHEMA.items():
        assert values[section] == {key: spec.default for key, spec in keys.items()}
        for spec in keys.values():
            # Each help text is there (wrapped into comment lines).
            first_words = " ".join(spec.help.split()[:4])
            assert first_words in " ".join(sample.replace("# ", " ").split())


def test_sample_with_a_host_is_a_valid_configuration(tmp_path: Path) -> None:
    sample = INSTALLED_SAMPLE.read_text()
    as_is = tmp_path / "as-is.toml"
    as_is.write_text(sample.replace('#host = ""', 'host = "homes.example.org"'))
    every_key = tmp_path / "every-key.toml"
    every_key.write_text(_uncommented(sample).replace('host = ""', 'host = "homes.example.org"'))
    for path in (as_is, every_key):
        locations = Locations.from_env({"HOME": str(tmp_path / "home"),
                                        "ROAMING_HOMES_CONFIG": str(path),
                                        "XDG_CONFIG_HOME": str(tmp_path / "cfg")})
        cfg = config.load(locations)
        assert cfg["server"]["host"] == ["homes.example.org"]
        assert cfg["sync"]["interval"] == config.SCHEMA["sync"]["interval"].default
        expected_source = str(path) if path == every_key else "default"
        assert cfg.sources["sync.interval"] == expected_source


def test_sample_without_a_host_is_refused_with_a_clear_error(local_user: Setup) -> None:
    local_user.config_path.write_text(INSTALLED_SAMPLE.read_text())
    result = local_user.run("config", "show")
    assert result.returncode == 78
    assert "server.host is required" in result.stderr
    assert "Traceback" not in result.stderr


def _block(sample: str, section: str, key: str) -> str:
    """The comment above `#key = ...` in `[section]`, as one line."""
    part = "\n" + sample.split(f"\n[{section}]\n", 1)[1]
    before = part.split(f"\n#{key} = ", 1)[0].rsplit("\n\n", 1)[1]
    return " ".join(line.removeprefix("# ").removeprefix("#") for line in before.splitlines())


def test_sample_documents_every_range() -> None:
    sample = INSTALLED_SAMPLE.read_text()
    ranged = [(section, key, spec.check) for section, keys in config.SCHEMA.items()
              for key, spec in keys.items() if isinstance(spec.check, config.Range)]
    assert len(ranged) >= 10
    for section, key, bounds in ranged:
        assert f"Range: {bounds}." in _block(sample, section, key), f"{section}.{key}"
    assert "Range: 1 to 65535." in _block(sample, "server", "port")
    assert "Range:" not in _block(sample, "server", "host")
