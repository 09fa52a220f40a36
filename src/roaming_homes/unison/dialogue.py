"""Running unison for a pass: spawned without a shell in its interactive text UI, its plan
read and judged before anything propagates (see `output`), stopped cleanly when asked."""

from __future__ import annotations

import contextlib
import os
import re
import select
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from roaming_homes.unison import runner
from roaming_homes.unison.output import (
    LISTED,
    NEW_ARCHIVES,
    NEW_ARCHIVES_IGNORED,
    PlanItem,
    Question,
    classify_question,
    parse_plan_line,
)

_SEGMENT_END = re.compile(rb"[\r\n]")


# After SIGINT unison prints "Terminated!", removes its locks and exits 3 within a second or so
# (SIGTERM would kill it without that cleanup, docs/unison.md §2); SIGKILL only if it does not.
ABORT_GRACE = 5.0


Decide = Callable[[Sequence[PlanItem]], bool]


@dataclass
class Run:
    returncode: int
    lines: list[str]
    plan: list[PlanItem] = field(default_factory=list)  # what unison listed before asking
    declined: Question | None = None  # the question we answered "quit" to: nothing propagated


class _Dialogue:
    """unison's side of the conversation: its plan as it is listed, and our answers.

    Only an unindented item line can be a question we answer with `l` or `g`; every line `l`
    lists is indented. So a name that merely ends like a question can at worst make us answer
    the first item's question a moment early (unison then reads the same answer it was about to
    ask for), or make us quit (nothing propagates): never propagate a plan not wholly read.
    """

    def __init__(self, decide: Decide) -> None:
        self.decide = decide
        self.items: dict[str, PlanItem] = {}
        self.asked = False  # `l` was answered: the plan is being (or has been) listed
        self.declined: Question | None = None
        self.new_archives = False  # unison just said which archives it goes on with

    def noted(self, line: str) -> None:
        """Take in a line of either stream (the question itself too): whether the last line
        before the question was the warning whose question may be answered."""
        if classify_question(line) is not Question.CONTINUE:
            self.new_archives = line.strip() in (NEW_ARCHIVES, NEW_ARCHIVES_IGNORED)

    def listed(self, line: str) -> str:
        """Take in a line of unison's standard output; returns it as -batch would print it
        (the items of the plan without `l`'s indentation)."""
        if self.asked and line.startswith(LISTED):
            item = parse_plan_line(line[len(LISTED):])
            if item is not None:
                self.items[item.path] = item
                return line[len(LISTED):]
        return line

    def answer(self, prompt: str) -> str:
        question = classify_question(prompt)
        if question is Question.CONTINUE and self.new_archives:
            self.new_archives = False
            return ""  # unison goes on with the archives it found on every host
        if question is Question.ITEM and not self.asked:
            self.asked = True
            return "l"
        if question in (Question.ITEM, Question.PROCEED) and self.decide(
                list(self.items.values())):
            return "g" if question is Question.ITEM else "y"
        self.declined = question
        return "q"


# The number of read(2) on each architecture (asm/unistd.h): /proc/PID/syscall names it so.
_READ_SYSCALL = {"x86_64": "0", "aarch64": "63", "riscv64": "63", "ppc64le": "3",
                 "s390x": "3", "i686": "3", "armv7l": "3"}


def waits_for_input(pid: int) -> bool | None:
    """Whether the process is blocked reading its standard input (None: cannot tell).

    /proc/PID/syscall names the system call a sleeping process is in: `read` (0) on fd 0.
    unison is single-threaded, so this is exact; a prompt printed but not yet read from is
    told apart from a name that merely ends like one.
    """
    read = _READ_SYSCALL.get(os.uname().machine)
    try:
        fields = Path(f"/proc/{pid}/syscall").read_text().split()
    except OSError:
        return None
    if read is None:
        return None
    return len(fields) > 1 and fields[0] == read and fields[1] == "0x0"


def run(argv: Sequence[str], env: Mapping[str, str], on_line: Callable[[str], None],
        decide: Decide, abort: threading.Event | None = None,
        pass_fds: Sequence[int] = ()) -> Run:
    """Spawn unison (no shell) in its interactive text UI; every output line goes to
    `on_line`; `decide` gets the whole plan before anything propagates, and says whether to.

    unison's progress bar rewrites one line with carriage returns; each segment counts as a
    line and is handed on as soon as it arrives. A negative return code means unison was
    killed by that signal. Setting `abort` stops unison cleanly (see `ABORT_GRACE`); unison
    then runs in a process group of its own, so that its ssh, which may hang on a frozen server
    holding our pipe, can be ended with it. `pass_fds` are inherited: the sync lock's
    descriptor, so the lock outlives us if we are killed while unison still runs.
    """
    lines: list[str] = []
    dialogue = _Dialogue(decide)

    def add(segment: str, stdout: bool) -> None:
        if stdout:
            segment = dialogue.listed(segment)
        if segment.strip():
            dialogue.noted(segment)
            lines.append(segment)
            on_line(segment)

    stderr = _Stderr()
    try:
        with runner.start(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                          stderr=stderr.write_fd, env=env, pass_fds=tuple(pass_fds),
                          process_group=None if abort is None else 0) as proc:
            if abort is not None:
                threading.Thread(target=_stop_on, args=(abort, proc), daemon=True).start()
            _converse(proc, dialogue, add, abort, stderr)
    finally:
        stderr.close()
    return Run(proc.returncode, lines, list(dialogue.items.values()), dialogue.declined)


class _Stderr:
    """unison's stderr, which its ssh inherits: ssh makes it non-blocking (O_NONBLOCK is a
    flag of the pipe's shared open file, not of ssh's descriptor), and unison, writing its
    progress there, then dies of `Sys_blocked_io` whenever the pipe is full for a moment. We
    keep a descriptor of the writing end and make it blocking again as we read; it is closed
    once unison has ended, so that the pipe ends when the last writer (its ssh) does."""

    def __init__(self) -> None:
        self.fd, self.write_fd = os.pipe2(os.O_CLOEXEC)

    def keep_blocking(self, proc: subprocess.Popen[bytes]) -> None:
        if self.write_fd < 0:
            return
        if proc.poll() is not None:
            self._close_write()
        elif not os.get_blocking(self.write_fd):
            os.set_blocking(self.write_fd, True)

    def _close_write(self) -> None:
        if self.write_fd >= 0:
            os.close(self.write_fd)
            self.write_fd = -1

    def close(self) -> None:
        self._close_write()
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _asks(pid: int, tail: bytes, quiet: float) -> bool:
    """Whether unison, quiet for `quiet` seconds, waits for an answer to the question `tail`.

    Where /proc cannot tell (no /proc, or `sync.unison` is a wrapper that runs unison as its
    child), a line that ends like a question and then stays quiet for QUIET_QUESTION seconds is
    one: should a name end like a question, answering early is harmless (see `_Dialogue`).
    """
    if waits_for_input(pid):
        return True
    return tail.endswith(b"] ") and quiet >= QUIET_QUESTION


QUIET_QUESTION = 1.0


IDLE = 0.1  # seconds without output after which we look whether unison waits for an answer
# ... when what it printed last ends like a question: unison sits down to read at once, and a
# pass that propagates asks twice (`l`, `g`): 0.1 s each was most of a real-time cycle on a LAN.
ASKING = 0.003


def _idle(tail: bytes) -> float:
    """How long to wait for more output before looking whether unison waits for an answer."""
    return ASKING if tail.endswith(b"] ") else IDLE


def _converse(proc: subprocess.Popen[bytes], dialogue: _Dialogue,
              add: Callable[[str, bool], None], abort: threading.Event | None,
              stderr: _Stderr) -> None:
    """Read unison's stdout and stderr until both end, answering its questions."""
    assert proc.stdout is not None and proc.stdin is not None
    out, err = proc.stdout.fileno(), stderr.fd
    pending = {out: b"", err: b""}
    last = time.monotonic()
    while pending:
        stderr.keep_blocking(proc)
        ready = select.select(list(pending), [], [], _idle(pending.get(out, b"")))[0]
        if not ready:
            if abort is not None and abort.is_set() and proc.poll() is not None:
                break  # the ssh master may hold our pipes (it got ssh's stdio handed over)
            tail = pending.get(out, b"")
            if proc.poll() is None and _asks(proc.pid, tail, time.monotonic() - last):
                if out in pending and select.select([out], [], [], 0)[0]:
                    # The question came out after the select above and before unison sat
                    # down to read: read it first (answering the stale tail would be "q").
                    continue
                prompt = tail.decode("utf-8", errors="surrogateescape")
                pending[out] = b""
                add(prompt, False)
                with contextlib.suppress(BrokenPipeError):
                    proc.stdin.write(dialogue.answer(prompt).encode() + b"\n")
                    proc.stdin.flush()
            continue
        last = time.monotonic()
        for fd in ready:
            chunk = os.read(fd, 65536)
            if not chunk:
                if pending[fd]:
                    add(pending[fd].decode("utf-8", errors="surrogateescape"), fd == out)
                del pending[fd]
                continue
            *complete, pending[fd] = _SEGMENT_END.split(pending[fd] + chunk)
            for segment in complete:
                add(segment.decode("utf-8", errors="surrogateescape"), fd == out)


def _stop_on(abort: threading.Event, proc: subprocess.Popen[bytes]) -> None:
    while proc.poll() is None:
        if abort.wait(0.2):
            proc.send_signal(signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(ABORT_GRACE)
            # Whatever is left of the group (unison itself, or its ssh) goes now.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            return
