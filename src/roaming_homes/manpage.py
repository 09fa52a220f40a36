"""The man pages roaming-homes(1) and roaming-homes.toml(5), written in roff from the argparse
parser (`cli.build_parser`) and the configuration schema (`config.SCHEMA`), so they say what
`--help` and `config sample` say. The packages build them:

    PYTHONPATH=src python3 -m roaming_homes.manpage DIR   # writes DIR/roaming-homes.1, .toml.5

Standard library only. No date in the pages: the same sources give the same bytes.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from roaming_homes import __version__, cli, config
from roaming_homes.config.sample import toml_value
from roaming_homes.errors import ExitCode
from roaming_homes.paths import SYSTEM_CONFIG

log = logging.getLogger(__name__)

EXIT_STATUS: dict[ExitCode, str] = {
    ExitCode.IN_SYNC: "The replicas are in sync (also: the user is excluded, nothing to do); "
    "for check: no check failed.",
    ExitCode.NEEDS_USER: "The sync ran and conflicts remain; for check: a check failed.",
    ExitCode.PARTIAL: ("The sync ran; some items failed to transfer, or could not be synced "
                       "for an error on one side (an unreadable folder, a pipe)."),
    ExitCode.FAILED: "The sync failed (a fatal unison error, the ssh login refused, the host "
    "key unknown or changed).",
    ExitCode.REFUSED: "A safety guard refused the pass; nothing was changed.",
    ExitCode.USAGE: "Usage error (also: check --user by someone other than root).",
    ExitCode.TRY_LATER: "Skipped, try later: the server is unreachable, the connection was "
    "lost, or another sync of this user runs.",
    ExitCode.CONFIG: "Configuration error; the message names the file, line and key.",
}

ENVIRONMENT = {
    "ROAMING_HOMES_CONFIG": f"The configuration file to read instead of {SYSTEM_CONFIG}.",
    "HOME": "The local home, which is synced.",
    "XDG_CONFIG_HOME": "Where the per-user file roaming-homes/config.toml is "
    "(default ~/.config).",
    "XDG_CONFIG_DIRS": "Where user-dirs.defaults is looked for (default /etc/xdg).",
    "XDG_STATE_HOME": "Where roaming-homes/ keeps the last result, the history, the sync log "
    "and unison's archives (default ~/.local/state).",
    "XDG_RUNTIME_DIR": "Where the sync lock and the shared ssh connection live "
    "(default /run/user/UID).",
}

FILES = {
    str(SYSTEM_CONFIG): "The system configuration, see roaming-homes.toml(5).",
    "~/.config/roaming-homes/config.toml": "The per-user configuration; it cannot weaken the "
    "system's.",
    "~/.local/state/roaming-homes/": "state.json, history.jsonl, sync.log (unison's output) "
    "and unison/ (archives and the generated profile).",
    "/usr/lib/systemd/user/roaming-homes.service": "The session service (roaming-homes daemon).",
}


def escape(text: str) -> str:
    """`text` as one roff text line: backslashes and dashes escaped, characters beyond ASCII
    as \\[uXXXX] (groff reads them whatever the input encoding), no leading control dot."""
    text = text.replace("\\", "\\e")
    text = "".join(c if ord(c) < 128 else f"\\[u{ord(c):04X}]" for c in text)
    text = text.replace("-", "\\-")
    return "\\&" + text if text.startswith((".", "'")) else text


def _header(name: str, section: int, title: str) -> list[str]:
    return [f'.TH "{name.upper()}" "{section}" "" "roaming-homes {__version__}" "{title}"',
            ".nh", ".ad l"]  # no hyphenation, ragged right: paths and options stay whole


def _usage(parser: argparse.ArgumentParser) -> str:
    return " ".join(parser.format_usage().split()).removeprefix("usage: ")


def _label(action: argparse.Action) -> str:
    """`-v, --verbose`, `--config FILE` or a positional's `FILE`, in roff."""
    metavar = action.metavar if isinstance(action.metavar, str) else action.dest.upper()
    if not action.option_strings:
        return f"\\fI{escape(metavar)}\\fR"
    label = ", ".join(f"\\fB{escape(option)}\\fR" for option in action.option_strings)
    return label + (f" \\fI{escape(metavar)}\\fR" if action.nargs != 0 else "")


def _options(parser: argparse.ArgumentParser) -> list[str]:
    lines: list[str] = []
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction | argparse._SubParsersAction):
            continue
        lines += [".TP", _label(action), escape(action.help or "")]
    return lines


def commands(parser: argparse.ArgumentParser,
             words: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], str,
                                                            argparse.ArgumentParser]]:
    """Every subcommand, nested ones too: (("config", "show"), its help, its parser)."""
    for action in parser._actions:
        if not isinstance(action, argparse._SubParsersAction):
            continue
        helps = {choice.dest: choice.help or "" for choice in action._choices_actions}
        for name, sub in action.choices.items():
            yield (*words, name), helps.get(name, ""), sub
            yield from commands(sub, (*words, name))


def _command_section(words: tuple[str, ...], summary: str,
                     parser: argparse.ArgumentParser) -> list[str]:
    lines = [f'.SS "{escape(" ".join(words))}"', escape(_usage(parser)), ".PP",
             escape(parser.description or summary)]
    return lines + _options(parser)


def _table(entries: dict[str, str], bold: bool) -> list[str]:
    font = "B" if bold else "I"
    lines: list[str] = []
    for name, text in entries.items():
        lines += [".TP", f"\\f{font}{escape(name)}\\fR", escape(text)]
    return lines


def command_page() -> str:
    """roaming-homes(1)."""
    parser = cli.build_parser()
    lines = [*_header(cli.PROG, 1, "User Commands"),
             ".SH NAME", f"{cli.PROG} \\- {escape(parser.description or '')}",
             ".SH SYNOPSIS", escape(_usage(parser)),
             ".SH DESCRIPTION",
             escape("Keeps the home directory in two-way sync with the same home on a server, "
                    "by unison over ssh: at login, periodically and on changes while the "
                    "session lasts (the daemon command, run by the systemd user service), and "
                    "at logout. What is synced and how is set in roaming-homes.toml(5)."),
             ".SH OPTIONS", *_options(parser), ".SH COMMANDS"]
    for words, summary, sub in commands(parser):
        lines += _command_section(words, summary, sub)
    lines += [".SH EXIT STATUS", *_table({str(int(code)): text
                                          for code, text in EXIT_STATUS.items()}, bold=True),
              ".SH ENVIRONMENT", *_table(ENVIRONMENT, bold=True),
              ".SH FILES", *_table(FILES, bold=False),
              ".SH SEE ALSO", "\\fBroaming-homes.toml\\fR(5), \\fBunison\\fR(1), "
              "\\fBssh\\fR(1), \\fBsystemctl\\fR(1)"]
    return "\n".join(lines) + "\n"


def _key(section: str, key: str, spec: config.Key) -> list[str]:
    rules = " ".join(filter(None, (config.value_rule(spec), config.per_user_rule(spec))))
    default = escape(toml_value(spec.default))
    return [".TP", f"\\fB{escape(key)}\\fR = {default}",
            escape(f"{spec.help} {rules} ({section}.{key}, {spec.type})")]


def config_page() -> str:
    """roaming-homes.toml(5)."""
    lines = [*_header("roaming-homes.toml", 5, "File Formats"),
             ".SH NAME", "roaming-homes.toml \\- configuration of roaming-homes",
             ".SH SYNOPSIS", f"\\fI{escape(str(SYSTEM_CONFIG))}\\fR",
             ".br", "\\fI~/.config/roaming\\-homes/config.toml\\fR",
             ".SH DESCRIPTION",
             escape("TOML. The system file is read first (or the file named by --config or "
                    "ROAMING_HOMES_CONFIG), then the user's own file, "
                    "$XDG_CONFIG_HOME/roaming-homes/config.toml. Unknown keys, wrong types, "
                    "values out of range, relative or '..' paths and control characters are "
                    "errors (exit 78) naming the file, line and key. %u expands to the user "
                    "name, %h to the local home. server.host (or server.root) must be set."),
             ".PP",
             escape("Each key says what the per-user file may do with it: user-settable keys "
                    "take the user's value; stricter-only keys only a stricter one; "
                    "system-only keys are the administrator's. What the per-user file may not "
                    "set is ignored with a warning, and the system value stays."),
             ".PP",
             escape("roaming-homes config sample prints every key below, commented, with its "
                    "default; roaming-homes config show prints the effective values and the "
                    "file each came from.")]
    for section, keys in config.SCHEMA.items():
        lines.append(f'.SH "[{section}]"')
        for key, spec in keys.items():
            lines += _key(section, key, spec)
    lines += [".SH EXAMPLE", ".nf",
              *(escape(line) for line in ("[server]", 'host = "homes.example.org"',
                                          'home = "/srv/homes/%u"', "", "[sync]",
                                          'paths = ["Documents", "Pictures"]',
                                          "max_delete = 20")),
              ".fi", ".SH SEE ALSO", "\\fBroaming-homes\\fR(1), \\fBunison\\fR(1)"]
    return "\n".join(lines) + "\n"


PAGES: dict[str, Callable[[], str]] = {"roaming-homes.1": command_page,
                                       "roaming-homes.toml.5": config_page}


def write(directory: Path) -> list[Path]:
    """Both pages into `directory` (made if missing); their paths."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, page in PAGES.items():
        path = directory / name
        path.write_text(page(), encoding="utf-8")
        log.info("wrote %s", path)
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python3 -m roaming_homes.manpage DIR", file=sys.stderr)
        return ExitCode.USAGE
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    write(Path(args[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
