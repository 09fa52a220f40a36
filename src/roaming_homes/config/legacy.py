"""Translate the original radiorabe `roaming-homes.conf` (a bash file) into our TOML.

The old scripts `source`d the file, so it may contain anything bash runs. We never execute it:
`parse` reads only the assignment forms the original sample used (`KEY="v"`, `KEY='v'`,
`KEY=v`, `KEY=( "a" "b" )` arrays across lines, `+=`, comments), expands `$USER` / `$HOME`
(and variables assigned earlier in the file) into `%u` / `%h`, and marks every value that
needs a shell to compute (`$(...)`, backquotes, `${X:-…}`) as not importable. Everything it
cannot translate is named in a warning; what it prints always passes our validation.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from roaming_homes import config
from roaming_homes.config.sample import comment, toml_value
from roaming_homes.errors import ConfigError
from roaming_homes.paths import Locations

# Old name -> (section, key) in our configuration.
MAPPING: dict[str, tuple[str, str]] = {
    "INCLUDE_PATH_LIST": ("sync", "paths"),
    "IGNORE_PATH_LIST": ("sync", "ignore_paths"),
    "IGNORE_NAME_LIST": ("sync", "ignore_names"),
    "USER_EXC_LIST": ("sync", "excluded_users"),
    "SSH_SERVER": ("server", "host"),
    "SSH_PORT": ("server", "port"),
    "SSH_SERVER_USER_HOME_DIR": ("server", "home"),
    "UNISON_EXEC": ("sync", "unison"),
    "MESSAGES_PATH": ("notify", "messages"),
}
# Old names that have no equivalent any more, and why.
OBSOLETE: dict[str, str] = {
    "RP_CONF_DIR": "the configuration is /etc/roaming-homes/roaming-homes.toml",
    "RP_LIB_DIR": "the program is installed as a Python package",
    "RP_SHARE_DIR": "the program is installed as a Python package",
    "RP_DOC_DIR": "the program is installed as a Python package",
    "HOME_DIR": "the local home is always $HOME (%h)",
    "UNISON_DIR": "unison's archives live in $XDG_STATE_HOME/roaming-homes/unison",
    "SSH_EXEC": "ssh is taken from the PATH; use server.ssh_options for its options",
    "MAIL_EXEC": "support mails open in xdg-email; set notify.support_email",
}
# Shell variables whose meaning we know: the user name and the local home.
_BUILTINS = {"USER": "%u", "LOGNAME": "%u", "HOME": "%h", "HOME_DIR": "%h"}

_ASSIGNMENT = re.compile(r"(?:(?:export|readonly|declare(?:\s+-\w+)*)\s+)?"
                         r"([A-Za-z_][A-Za-z0-9_]*)(\+?)=")
_BRACED = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(%/)?\}")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_WORD_END = frozenset(" \t\n;&|<>()")


@dataclass
class Word:
    """One shell word: literal text and variables (`("text", s)` / `("var", "%u", "$USER")`)."""

    parts: list[tuple[str, ...]] = field(default_factory=list)
    problem: str | None = None  # why it cannot be imported (command substitution, …)

    def render(self, expands: bool, key: str) -> tuple[str, str | None]:
        """The value for `key`; `expands` says whether the key understands %u / %h."""
        if self.problem:
            return "", self.problem
        out = []
        for part in self.parts:
            if part[0] == "text":
                out.append(part[1].replace("%", "%%") if expands else part[1])
            elif expands:
                out.append(part[1])
            else:
                return "", f"uses {part[2]}, but {key} does not expand %u / %h"
        return "".join(out), None


@dataclass
class Assignment:
    name: str
    words: list[Word]
    is_array: bool
    append: bool
    line: int


@dataclass
class Imported:
    toml: str
    values: dict[str, dict[str, Any]]
    warnings: list[str]  # "FILE:LINE: message", in the file's order


class _Reader:
    """A cursor over the file's text that knows its line number."""

    def __init__(self, text: str, path: Path) -> None:
        self.text, self.path, self.pos = text, path, 0

    @property
    def line(self) -> int:
        return self.text.count("\n", 0, self.pos) + 1

    def peek(self, offset: int = 0) -> str:
        index = self.pos + offset
        return self.text[index] if index < len(self.text) else ""

    def error(self, what: str, line: int | None = None) -> ConfigError:
        return ConfigError(f"{self.path}:{line or self.line}: {what}")

    def skip_blanks(self, newlines: bool = False) -> None:
        while self.peek() in (" \t\n" if newlines else " \t") and self.peek():
            self.pos += 1
        if self.peek() == "\\" and self.peek(1) == "\n":
            self.pos += 2
            self.skip_blanks(newlines)

    def skip_line(self) -> str:
        end = self.text.find("\n", self.pos)
        end = len(self.text) if end < 0 else end
        rest, self.pos = self.text[self.pos:end], end
        return rest

    def skip_balanced(self, opening: str, closing: str) -> None:
        """Past the `closing` that matches the `opening` just read (quotes respected)."""
        start, depth = self.line, 1
        while depth:
            char = self.peek()
            if not char:
                raise self.error(f"unterminated {opening}…{closing}", start)
            self.pos += 1
            if char == "\\":
                self.pos += 1
            elif char in "'\"" and opening != "`":
                self.skip_quoted(char)
            elif char == closing and opening != closing:
                depth -= 1
            elif char == closing:
                depth = 0
            elif char == opening:
                depth += 1

    def skip_quoted(self, quote: str) -> None:
        start = self.line
        while (char := self.peek()) != quote:
            if not char:
                raise self.error("unterminated quote", start)
            self.pos += 2 if char == "\\" and quote == '"' else 1
        self.pos += 1


def _dollar(reader: _Reader, word: Word, known: dict[str, Word]) -> None:
    """Read what follows a `$` into `word` (a variable), or mark it as not importable."""
    if reader.peek() == "(":
        reader.pos += 1
        reader.skip_balanced("(", ")")
        word.problem = word.problem or "needs a command to run ($(…)), which is never executed"
        return
    braced = _BRACED.match(reader.text, reader.pos)
    plain = _NAME.match(reader.text, reader.pos)
    if reader.peek() == "{" and not braced:
        reader.pos += 1
        reader.skip_balanced("{", "}")
        word.problem = word.problem or "uses a shell parameter expansion (${…}) that needs bash"
        return
    match = braced or plain
    if match is None:
        word.parts.append(("text", "$"))
        return
    reader.pos = match.end()
    name = match.group(1) if braced else match.group(0)
    if name in known:
        word.problem = word.problem or known[name].problem
        word.parts.extend(known[name].parts)
    elif name in _BUILTINS:
        word.parts.append(("var", _BUILTINS[name], f"${name}"))
    else:
        word.problem = word.problem or f"uses ${name}, which the new configuration cannot know"


def _backslash(reader: _Reader, word: Word, quote: str) -> None:
    """Read what follows a `\\` (outside single quotes) into `word`.

    A backslash-newline joins the lines (nothing is kept). Within double quotes the backslash
    escapes only `$`, `` ` ``, `"` and `\\`; before anything else it stays, as bash keeps it.
    """
    escaped = reader.peek()
    reader.pos += 1
    if escaped == "\n":
        return
    if quote and escaped not in '$`"\\':
        word.parts.append(("text", "\\"))
    word.parts.append(("text", escaped))


def _word(reader: _Reader, known: dict[str, Word]) -> Word:
    """One shell word starting at the cursor (possibly empty)."""
    word = Word()
    quote, quote_line = "", 0
    while True:
        char = reader.peek()
        if not char:
            if quote:
                raise reader.error("unterminated quote", quote_line)
            return word
        if not quote and char in _WORD_END:
            return word
        reader.pos += 1
        if char == quote:
            quote = ""
        elif not quote and char in "'\"":
            quote, quote_line = char, reader.line
        elif quote == "'":
            word.parts.append(("text", char))
        elif char == "\\":
            _backslash(reader, word, quote)
        elif char == "$":
            _dollar(reader, word, known)
        elif char == "`":
            reader.skip_balanced("`", "`")
            word.problem = word.problem or "needs a command to run (`…`), which is never executed"
        else:
            word.parts.append(("text", char))


Warning = tuple[int, str]  # line number, message


def parse(text: str, path: Path) -> tuple[list[Assignment], list[Warning]]:
    """The assignments in a bash config, and warnings for every line that is something else."""
    reader = _Reader(text, path)
    found: list[Assignment] = []
    warnings: list[Warning] = []
    known: dict[str, Word] = {}
    while reader.peek():
        reader.skip_blanks(newlines=True)
        if reader.peek() in ("#", ""):
            reader.skip_line()
            continue
        if reader.peek() == ";":
            reader.pos += 1
            continue
        line = reader.line
        match = _ASSIGNMENT.match(reader.text, reader.pos)
        if match is None:
            warnings.append((line, f"not an assignment, ignored: "
                                   f"{reader.skip_line().strip()[:60]}"))
            continue
        reader.pos = match.end()
        name, append = match.group(1), bool(match.group(2))
        if reader.peek() == "(":
            reader.pos += 1
            words = []
            while True:
                reader.skip_blanks(newlines=True)
                if reader.peek() == "#":
                    reader.skip_line()
                elif reader.peek() == ")":
                    reader.pos += 1
                    break
                elif not reader.peek() or reader.peek() in _WORD_END:
                    raise reader.error(f"{name}: unterminated array ( … )", line)
                else:
                    words.append(_word(reader, known))
            found.append(Assignment(name, words, True, append, line))
        else:
            word = _word(reader, known)
            found.append(Assignment(name, [word], False, append, line))
            known[name] = word
        reader.skip_blanks()
        if reader.peek() not in ("", "\n", "#", ";"):
            warnings.append((reader.line, f"text after {name}=… ignored: "
                                          f"{reader.skip_line().strip()[:60]}"))
    return found, warnings


def _convert(assignment: Assignment, section: str, key: str,
             current: Any) -> tuple[Any, str | None]:
    """The value of one mapped assignment for `section.key`, or why it cannot be imported."""
    spec = config.SCHEMA[section][key]
    rendered = []
    for word in assignment.words:
        value, problem = word.render(spec.expand, f"{section}.{key}")
        if problem:
            return None, problem
        rendered.append(value)
    if spec.type == "list":
        if not assignment.is_array and rendered == [""]:
            rendered = []
        return ([*(current or []), *rendered] if assignment.append else rendered), None
    if len(rendered) != 1:
        return None, f"has {len(rendered)} values; {section}.{key} takes one"
    value = rendered[0]
    if spec.type == "int":
        return (int(value), None) if value.isdigit() else (None, f"{value!r} is not a number")
    return value, None


def translate(assignments: list[Assignment],
              locations: Locations) -> tuple[dict[str, dict[str, Any]], list[Warning]]:
    """Our configuration values from the old assignments, validated, and warnings."""
    values: dict[str, dict[str, Any]] = {section: {} for section in config.SCHEMA}
    warnings: list[Warning] = []
    for assignment in assignments:
        name = assignment.name

        def warn(message: str, line: int = assignment.line) -> None:
            warnings.append((line, message))

        if name in OBSOLETE:
            warn(f"{name} is not used any more ({OBSOLETE[name]})")
            continue
        if name not in MAPPING:
            warn(f"{name} is unknown to roaming-homes; not imported")
            continue
        section, key = MAPPING[name]
        value, problem = _convert(assignment, section, key, values[section].get(key))
        updates = {key: value}
        if problem is None and (section, key) == ("server", "host"):
            if not value:
                warn(f"{name} is empty; set server.host")
                continue
            # The old scripts handed SSH_SERVER to ssh as is, so user@host worked there.
            user, _, host = value.rpartition("@")
            updates = {"host": host, **({"user": user} if user else {})}
        problem = problem or next(
            (p for k, v in updates.items()
             if (p := config.check_value(section, k, v, locations)[1])), None)
        if problem:
            warn(f"{name} not imported: {problem}")
            continue
        values[section].update(updates)
        if name == "MESSAGES_PATH":
            warn(f"{name}: notification texts are a TOML file now; convert {value} by hand "
                 "(the old format is not read)")
    return {s: keys for s, keys in values.items() if keys}, warnings


def render(values: dict[str, dict[str, Any]], source: Path, notes: dict[str, str]) -> str:
    """TOML for `values`, in SCHEMA order, with a header and per-key notes as comments."""
    lines = comment(f"Imported from {source} by `roaming-homes config import-legacy`.\n"
                    "Keys not listed keep their defaults; `roaming-homes config sample` "
                    "lists them all.")
    for section, keys in config.SCHEMA.items():
        if section not in values:
            continue
        lines += ["", f"[{section}]"]
        for key in keys:
            if key in values[section]:
                note = notes.get(f"{section}.{key}")
                lines += [*(comment(note) if note else []),
                          f"{key} = {toml_value(values[section][key])}"]
    return "\n".join(lines) + "\n"


def import_file(path: Path, locations: Locations) -> Imported:
    """Read (never run) an old configuration file and translate it."""
    assignments, warnings = parse(config.read_text(path), path)
    values, more = translate(assignments, locations)
    notes = {}
    if "home" not in values.setdefault("server", {}):
        # The old default was the client's own home path (HOME_DIR); ours is /home/%u.
        values["server"]["home"] = "%h"
        notes["server.home"] = ("SSH_SERVER_USER_HOME_DIR was not set: the old default, the "
                                "same path as the local home.")
    return Imported(render(values, path, notes), values,
                    [f"{path}:{line}: {message}" for line, message in sorted(warnings + more)])
