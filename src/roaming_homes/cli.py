"""Command-line front end: parses arguments, runs a command, maps its outcome to an exit code.

One `_add_<command>` / `_run_<command>` pair per subcommand. Modules beyond the standard
library's basics are imported inside the commands that need them: the CLI runs often (every
login, every pass) and must start fast.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any, NoReturn

from roaming_homes import __version__
from roaming_homes.errors import ExitCode, RoamingHomesError
from roaming_homes.text import escape, printable

PROG = "roaming-homes"


class _Parser(argparse.ArgumentParser):
    """argparse exits 2 on a usage error; 2 means "some items failed" here, so use 64."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(ExitCode.USAGE, f"{self.prog}: error: {message}\n")


def _say(args: argparse.Namespace, text: str) -> None:
    if not args.quiet:
        print(printable(text), flush=True)


def _warn(text: str) -> None:
    print(f"{PROG}: {printable(text)}", file=sys.stderr, flush=True)


def _print_json(data: Any) -> None:
    import json

    print(json.dumps(data, indent=2, sort_keys=True))


def _load(args: argparse.Namespace) -> tuple[Any, Any]:
    from roaming_homes import config
    from roaming_homes.paths import Locations

    locations = Locations.from_env()
    return config.load(locations, args.config), locations


# --- sync -------------------------------------------------------------------------------------

def _add_sync(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sync", help="run one sync pass now",
                       description="Synchronize the home with the server once, now.")
    p.add_argument("--first-run", action="store_true",
                   help="treat this as a first sync (unison -ignorearchives: union, no deletions)")
    p.add_argument("--force", action="store_true",
                   help="propagate deletions this once even above sync.max_delete (the "
                   "replica markers are still checked)")
    p.add_argument("--json", action="store_true", help="print the outcome as JSON")
    p.add_argument("--dry-run", action="store_true",
                   help="show what a pass would copy, delete and overwrite in each direction, "
                   "and what the guards would say, without changing anything (exit 4 when the "
                   "guards would refuse it)")
    p.add_argument("--skip-if-daemon", action="store_true",
                   help="do nothing when the session daemon runs or syncing is paused (for "
                   "login/logout hooks; paused: exit 75)")
    p.add_argument("--logout", action="store_true",
                   help="the session's last pass (the logout hook): when it cannot sync (the "
                   "server out of reach, syncing paused), say which files changed here are "
                   "not on the server (stderr, sync.log, a notification)")
    p.set_defaults(run=_run_sync)


# While the daemon runs, `sync` waits this long for a pass of the daemon's to end, then runs its
# own: the user gets a real answer rather than "try later".
WAIT_FOR_DAEMON_PASS = 300


def _run_sync(args: argparse.Namespace) -> int:
    from roaming_homes.actions import sync as engine
    from roaming_homes.session import pause
    from roaming_homes.session.lock import lock_holder, make_way
    from roaming_homes.session.progress import TerminalDisplay, observe_all

    cfg, locations = _load(args)
    daemon_pid = lock_holder(locations.daemon_lock_file)
    if daemon_pid and args.skip_if_daemon:
        _say(args, f"the session daemon (pid {daemon_pid}) syncs this home: nothing to do")
        return ExitCode.IN_SYNC

    announcer = None
    if cfg["notify"]["enabled"]:
        from roaming_homes.desktop import notify

        notify.check_config(cfg)  # a bad messages file is a config error (78) before any pass
        announcer = notify.FirstSyncAnnouncer(cfg, locations)
    if daemon_pid:
        make_way(locations, daemon_pid)  # real-time mode holds the lock for good
    if args.dry_run:
        return _dry_run(args, cfg, locations)
    if not args.skip_if_daemon and (held := pause.paused(locations)) is not None:
        # Asked for by the user: this pass runs; what syncs by itself stays paused.
        _warn(f"note: syncing is {held.line()}: this pass runs because you asked; real-time "
              f"and periodic syncing stay paused ({pause.RESUME_COMMAND})")
    # -v shows unison's own lines instead; --json and -q keep stdout for the result alone.
    display = None if (args.quiet or args.verbose or args.json) else TerminalDisplay(
        sys.stdout, live=sys.stdout.isatty())
    outcome = engine.run_pass(cfg, locations, first_run=args.first_run,
                              force=args.force,
                              on_progress=observe_all(display, announcer),
                              lock_wait=WAIT_FOR_DAEMON_PASS if daemon_pid else 0,
                              unless_paused=args.skip_if_daemon)
    if cfg["notify"]["enabled"]:
        notify.after_pass(cfg, locations, outcome)
    code = _report_outcome(args, outcome)
    if args.logout:
        from roaming_homes.actions import pending

        if line := pending.tell(cfg, locations, outcome):
            _warn(line)
    return code


_ARROWS = {"to server": "---->", "to local": "<----", "conflict": "<-?->", "merge": "<-M->",
           "error": "error"}


def _dry_run(args: argparse.Namespace, cfg: Any, locations: Any) -> int:
    from roaming_homes.actions import sync

    planned = sync.dry_run(cfg, locations)
    if planned.outcome is not None:
        return _report_outcome(args, planned.outcome)
    if args.json:
        _print_json({"dry_run": True, "first_run": planned.first, "refusal": planned.refusal,
                     "following": planned.following,
                     "items": [{"path": i.path, "local": i.local.value,
                                "direction": i.direction.value, "server": i.server.value}
                               for i in planned.items]})
    else:
        lines = [f"dry run, nothing was changed: {len(planned.items)} item(s) would sync"
                 + (" (a first sync: the union of both sides)" if planned.first else "")]
        lines += [f"  {_ARROWS[i.direction.value]}  {i.local.value:<12} {i.server.value:<12} "
                  f"{escape(i.path)}" for i in planned.items]
        if planned.following:
            lines.append(f"it would follow a deletion confirmed on {planned.following}")
        if planned.refusal:
            lines.append(f"the guards would refuse it: {planned.refusal}")
        print(printable("\n".join(lines)))
    return ExitCode.REFUSED if planned.refusal else ExitCode.IN_SYNC


def _report_outcome(args: argparse.Namespace, outcome: Any) -> int:
    """A pass's outcome as JSON, or one line (stderr when it needs attention); its exit code."""
    if getattr(args, "json", False):  # `resolve` has no --json
        _print_json(outcome.to_dict())
    elif outcome.exit_code in (ExitCode.IN_SYNC, ExitCode.NEEDS_USER):
        _say(args, outcome.message)
    else:
        prefix = "skipped" if outcome.exit_code == ExitCode.TRY_LATER else "error"
        _warn(f"{prefix}: {outcome.message}")
    return int(outcome.exit_code)


# --- status -----------------------------------------------------------------------------------

def _add_status(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("status", help="show the last result and whether a sync runs now",
                       description="Show the last pass, the last successful sync, pending "
                       "conflicts and whether a sync is running now.")
    p.add_argument("--json", action="store_true", help="print the status as JSON")
    p.add_argument("--watch", action="store_true",
                   help="follow a running pass (or real-time cycle) live until it ends (Ctrl-C "
                   "stops watching)")
    p.set_defaults(run=_run_status)


def _run_status(args: argparse.Namespace) -> int:
    from roaming_homes import config
    from roaming_homes.actions import status
    from roaming_homes.paths import Locations

    locations = Locations.from_env()
    if args.watch:
        _watch(locations)
    stale_after, forget_after = 86400, 90
    try:
        cfg = config.load(locations, args.config)
        stale_after, forget_after = cfg["notify"]["stale_after"], cfg["client"]["forget_after"]
    except RoamingHomesError:
        pass  # status still shows what it can; `check` and `sync` name the problem
    report = status.report(locations, stale_after, forget_after)
    if args.json:
        _print_json(report)
    else:
        print(status.render(report))
    return 0


def _watch(locations: Any) -> None:
    """Follow the running pass's progress until it ends (in real-time mode, the cycle running
    now; none: return at once); Ctrl-C just stops watching."""
    import time

    from roaming_homes.session import progress
    from roaming_homes.session.lock import lock_purpose

    display = progress.TerminalDisplay(sys.stdout, live=sys.stdout.isatty())
    try:
        while held := lock_purpose(locations.lock_file):
            current = progress.read(locations)
            if current is None and held[1] == "watch":
                break  # watching, and no cycle runs (any more)
            if current is not None:
                display(current)
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    display(progress.Progress(phase="done"))  # clears the live line; the status follows


# --- pause / resume ---------------------------------------------------------------------------

def _add_pause(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("pause", help="pause syncing for a while, or until resume",
                       description="Pause syncing: the session daemon runs no pass (real-time, "
                       "periodic or at logout) and the login/logout hooks skip theirs, for "
                       "DURATION or until `roaming-homes resume`; then one pass catches up. An "
                       "explicit `roaming-homes sync` still runs. A new pause replaces the "
                       "one in force.")
    p.add_argument("duration", nargs="?", metavar="DURATION",
                   help="how long: 30m, 1h, 2h30m, 1d, 90s (default: until resume)")
    p.set_defaults(run=_run_pause)
    r = sub.add_parser("resume", help="sync again after a pause",
                       description="End the pause: the session daemon syncs at once and goes "
                       "on as before.")
    r.set_defaults(run=_run_resume)


def _run_pause(args: argparse.Namespace) -> int:
    from datetime import datetime

    from roaming_homes.paths import Locations
    from roaming_homes.session import pause

    until = None
    if args.duration is not None:
        try:
            until = datetime.now().astimezone() + pause.parse_duration(args.duration)
        except ValueError as exc:
            raise RoamingHomesError(str(exc), ExitCode.USAGE) from None
    made = pause.pause(Locations.from_env(), until)
    _say(args, f"syncing {made.line()} ({pause.RESUME_COMMAND} to sync again; "
         "roaming-homes sync still runs a pass)")
    return 0


def _run_resume(args: argparse.Namespace) -> int:
    from roaming_homes.paths import Locations
    from roaming_homes.session import pause

    was = pause.resume(Locations.from_env())
    _say(args, "resumed: syncing again" if was else "syncing was not paused")
    return 0


# --- check ------------------------------------------------------------------------------------

def _add_check(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("check", help="diagnose the setup: config, ssh, server home, unison, "
                       "service, last sync", description="Check everything a sync needs, one "
                       "line per check with the fix to apply. Exit 0 only when every check "
                       "passes (warnings and skipped checks do not fail).")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument("--user", metavar="NAME",
                   help="as root: check user NAME's set-up as that user (their uid, groups, "
                   "home and XDG directories; nothing of theirs is read as root)")
    p.set_defaults(run=_run_check)


def _run_check(args: argparse.Namespace) -> int:
    from roaming_homes.actions.check import run_checks
    from roaming_homes.paths import Locations

    if args.user is not None:
        from roaming_homes.session.become import become

        become(args.user)
    report = run_checks(Locations.from_env(), args.config)
    if args.json:
        _print_json(report.to_dict())
    else:
        for result in report.results:
            print(printable(result.line()), flush=True)
    if not report.config_ok:
        return ExitCode.CONFIG
    return 0 if report.ok else ExitCode.NEEDS_USER


# --- conflicts / resolve ----------------------------------------------------------------------

def _add_conflicts(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("conflicts", help="list unresolved conflicts",
                       description="List the conflicts the last pass left: path, and the "
                       "modification time and size on each side.")
    p.add_argument("--json", action="store_true", help="print the list as JSON")
    p.set_defaults(run=_run_conflicts)
    csub = p.add_subparsers(dest="conflicts_command", metavar="ACTION", parser_class=_Parser)
    resolve = csub.add_parser(
        "resolve", help="settle conflicts without a UI",
        description="Settle the conflicts at PATH (relative to the current directory, or "
        "absolute, inside the home) and sync. --keep both: this computer's version keeps the "
        "name and the other is kept beside it as a conflict copy; local or server: that side's "
        "version wins on both sides (the other goes to the backups); newer: the version with the "
        "later modification time wins.")
    resolve.add_argument("paths", nargs="+", metavar="PATH", help="a file in conflict")
    resolve.add_argument("--keep", required=True, choices=("both", "local", "server", "newer"),
                         help="which version keeps the name")
    resolve.add_argument("--json", action="store_true", help="print the outcome as JSON")
    resolve.set_defaults(run=_run_conflicts_resolve)


def _when(side: Any) -> str:
    import time

    if side.mtime is None:
        return "absent or unknown"
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(side.mtime))
    return f"{stamp}, {side.size} bytes"


def _run_conflicts(args: argparse.Namespace) -> int:
    from roaming_homes.actions import conflicts

    cfg, locations = _load(args)
    found, note = conflicts.list_conflicts(cfg, locations)
    if args.json:
        _print_json({"conflicts": [c.to_dict() for c in found], "note": note})
        return 0
    if not found:
        _say(args, "no unresolved conflicts")
    for item in found:
        local = f"{_when(item.local)} (this computer, {printable(item.local.by)})"
        server = _when(item.server) + (f" (last synced by {printable(item.server.by)})"
                                       if item.server.by else "")
        print(f"{escape(item.path)}\n  local:  {local}\n  server: {server}")
    if note:
        _warn(note)
    return 0


def _run_conflicts_resolve(args: argparse.Namespace) -> int:
    from roaming_homes.actions import conflicts
    from roaming_homes.actions.restore import home_path

    cfg, locations = _load(args)
    if cfg["notify"]["enabled"]:
        from roaming_homes.desktop import notify

        notify.check_config(cfg)
    paths = [home_path(typed, locations.home) for typed in args.paths]
    outcome = conflicts.resolve_paths(cfg, locations, paths, args.keep)
    if cfg["notify"]["enabled"]:
        notify.after_pass(cfg, locations, outcome)
    return _report_outcome(args, outcome)


def _add_resolve(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("resolve", help="resolve conflicts by hand (graphical unison, else text)",
                       description="Open the graphical unison (unison-gtk, when installed and "
                       "a display is available) or unison's text interface on the same profile, "
                       "under the sync lock; then run one pass.")
    p.set_defaults(run=_run_resolve)


def _run_resolve(args: argparse.Namespace) -> int:
    from roaming_homes.actions import conflicts

    cfg, locations = _load(args)
    return _report_outcome(args, conflicts.resolve(cfg, locations))


# --- restore ----------------------------------------------------------------------------------

def _add_restore(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("restore", help="bring back old versions of files, or files a refused "
                       "sync would have deleted or overwritten",
                       description="Bring files back. PATH (relative to the current directory, "
                       "or absolute, inside the home): its newest kept version (or --version N, "
                       "as --list numbers them) from the backups of either side, into the home "
                       "(the next pass syncs it) or --to DIR; a live file in the way is never "
                       "overwritten without --force or a yes. --since TIME: every file deleted "
                       "since then. --list: the kept versions instead. --refused: undo what the "
                       "last pass the mass-deletion guard refused would have deleted or "
                       "overwritten, from the side that still has it.")
    p.add_argument("path", nargs="?", metavar="PATH", help="a file or directory in the home")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--refused", action="store_true",
                      help="undo what the last refused pass would have deleted or overwritten")
    mode.add_argument("--list", action="store_true",
                      help="list the kept versions (of PATH, or of what changed since --since)")
    p.add_argument("--since", metavar="TIME",
                   help="files deleted (or, with --list, replaced) since TIME: 2h, 30m, 3d, "
                   "2026-11-29 10:00")
    p.add_argument("--version", type=int, metavar="N", help="the N-th newest kept version")
    p.add_argument("--to", type=Path, metavar="DIR", help="write into DIR instead of the home")
    p.add_argument("--force", action="store_true",
                   help="replace live files in the way (they go to the local backups)")
    p.add_argument("--json", action="store_true", help="print the outcome as JSON")
    p.set_defaults(run=_run_restore)


def _restore_usage(args: argparse.Namespace) -> str | None:
    """What is wrong with this combination of restore's options, if anything."""
    if args.refused:
        extra = args.path or args.since or args.version or args.to or args.force
        return "--refused takes no PATH or other option" if extra else None
    if not args.list and not args.path and not args.since:
        return "name a PATH, or give --since TIME, --list or --refused"
    if args.version is not None and (args.version < 1 or not args.path):
        return "--version takes a number from 1 (as --list shows) and a PATH"
    if args.list and (args.to or args.force or args.version):
        return "--list only takes PATH and --since"
    return None


def _run_restore(args: argparse.Namespace) -> int:
    from roaming_homes.session.lock import lock_holder, make_way

    if problem := _restore_usage(args):
        raise RoamingHomesError(problem, ExitCode.USAGE)
    cfg, locations = _load(args)
    if args.list:
        return _list_versions(args, cfg, locations)
    if (daemon_pid := lock_holder(locations.daemon_lock_file)) and not args.to:
        make_way(locations, daemon_pid)  # real-time mode holds the lock for good
    if not args.refused:
        return _restore_versions(args, cfg, locations)
    from roaming_homes.actions import restore

    try:
        outcome = restore.restore_refused(cfg, locations)
    except RoamingHomesError as exc:
        if exc.code != ExitCode.IN_SYNC:
            raise
        _say(args, exc.message)
        return ExitCode.IN_SYNC
    if cfg["notify"]["enabled"]:
        from roaming_homes.desktop import notify

        # The refusal's notification stays on screen (resident) until a pass replaces it.
        notify.after_pass(cfg, locations, outcome)
    return _report_outcome(args, outcome)


def _restore_target(args: argparse.Namespace, locations: Any) -> tuple[str | None, float | None]:
    """The asked path relative to the home, and --since as a time stamp (usage errors: 64)."""
    from roaming_homes.actions import restore

    path = restore.home_path(args.path, locations.home) if args.path else None
    try:
        since = restore.parse_since(args.since) if args.since else None
    except ValueError:
        raise RoamingHomesError(f"--since {args.since!r} is not a time (2h, 3d, 2026-11-29 "
                                "10:00)", ExitCode.USAGE) from None
    return path, since


def _list_versions(args: argparse.Namespace, cfg: Any, locations: Any) -> int:
    import time

    from roaming_homes.actions import restore

    path, since = _restore_target(args, locations)
    found = restore.kept(cfg, locations)
    versions = restore.select(found.versions, path, since)
    if args.json:
        _print_json({"versions": [found.to_dict(v) for v in versions], "notes": found.notes})
        return 0
    if not versions:
        _say(args, "no kept versions")
    current = None
    for version in versions:
        if version.path != current:
            current = version.path
            print(escape(version.path))
        stamp = time.strftime("%Y-%m-%d %H:%M", time.localtime(version.mtime))
        replaced = time.strftime("%Y-%m-%d %H:%M", time.localtime(version.superseded))
        where = f" on {printable(found.computer)}" if version.side == "local" else ""
        print(f"  {version.number:>3}  {version.side:<6}  {stamp}  {version.size:>10} B  "
              f"replaced {replaced}{where}")
    for note in found.notes:
        _warn(note)
    return 0


def _restore_versions(args: argparse.Namespace, cfg: Any, locations: Any) -> int:
    from roaming_homes.actions import restore

    path, since = _restore_target(args, locations)
    force = args.force or False
    asked = dict(number=args.version, since=since, to=args.to)
    result = restore.restore_versions(cfg, locations, path, force=force, **asked)
    if result.in_the_way and not force and not args.json and sys.stdin.isatty():
        answer = input(f"{printable(result.message(args.to is None))}\nReplace the live "
                       "file(s)? The live versions go to the backups. [y/N] ")
        if answer.strip().lower() in ("y", "yes"):
            result = restore.restore_versions(cfg, locations, path, force=True, **asked)
    if args.json:
        _print_json(result.to_dict(args.to is None))
    elif result.exit_code == ExitCode.IN_SYNC:
        _say(args, result.message(args.to is None))
    else:
        _warn(result.message(args.to is None))
    for note in result.notes:
        _warn(note)
    return int(result.exit_code)


# --- config -----------------------------------------------------------------------------------

def _add_config(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("config", help="show the effective configuration",
                       description="Inspect the configuration.")
    csub = p.add_subparsers(dest="config_command", metavar="ACTION", required=True,
                            parser_class=_Parser)
    show = csub.add_parser("show", help="the effective configuration and where each value "
                           "came from")
    show.add_argument("--json", action="store_true", help="print as JSON")
    show.set_defaults(run=_run_config_show)
    sample = csub.add_parser("sample", help="print a commented sample with every key and its "
                             "default", description="Print a commented sample configuration: "
                             "every key, its meaning and its default.")
    sample.set_defaults(run=_run_config_sample)
    legacy = csub.add_parser("import-legacy", help="translate an original roaming-homes.conf "
                             "into TOML", description="Read the original (bash) roaming-homes "
                             "configuration without executing it and print the equivalent TOML. "
                             "What cannot be translated is named on stderr.")
    legacy.add_argument("file", type=Path, metavar="FILE",
                        help="the old configuration, e.g. /etc/roaming-homes/roaming-homes.conf")
    legacy.set_defaults(run=_run_config_import_legacy)


def _run_config_show(args: argparse.Namespace) -> int:
    from roaming_homes.config.sample import toml_value

    cfg, _ = _load(args)
    if args.json:
        _print_json({"values": cfg.values, "sources": cfg.sources})
        return 0
    for section, table in cfg.values.items():
        print(f"[{section}]")
        for key, value in table.items():
            print(f"{key} = {toml_value(value)}  # {cfg.sources[f'{section}.{key}']}")
        print()
    return 0


def _run_config_sample(args: argparse.Namespace) -> int:
    from roaming_homes.config.sample import sample

    print(sample(), end="")
    return 0


def _run_config_import_legacy(args: argparse.Namespace) -> int:
    from roaming_homes.config import legacy
    from roaming_homes.paths import Locations

    imported = legacy.import_file(args.file, Locations.from_env())
    for warning in imported.warnings:
        _warn(f"warning: {warning}")
    print(imported.toml, end="")
    return 0


# --- daemon -----------------------------------------------------------------------------------

def _add_daemon(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("daemon", help="the session service: sync at login, periodically, when "
                       "the network is back, and at logout",
                       description="Run until SIGTERM: real-time mode when sync.watch is on "
                       "and the server has unison-fsmonitor, else a pass now, then every "
                       "sync.interval seconds (SIGUSR1: a pass now, or in real-time mode a full "
                       "rescan; SIGHUP: reload the configuration), and a "
                       "final pass bounded by sync.logout_timeout at SIGTERM. Tells systemd its "
                       "status when started as a Type=notify service.")
    p.set_defaults(run=_run_daemon)


def _run_daemon(args: argparse.Namespace) -> int:
    from roaming_homes.actions import daemon
    from roaming_homes.paths import Locations

    return daemon.main(Locations.from_env(), args.config)


# --- server -----------------------------------------------------------------------------------

def _add_server(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("server", help="on the server: report on the homes synced with it",
                       description="Commands an administrator runs on the server.")
    ssub = p.add_subparsers(dest="server_command", metavar="ACTION", required=True,
                            parser_class=_Parser)
    report = ssub.add_parser(
        "report", help="per home: its computers, their last sync, stale ones, live sessions",
        description="Report on the homes synced with this server (as root: every home that the "
        "configured server.home names for a user of the passwd database, or that is a passwd "
        "home directory, and holds .roaming-homes or a replica marker; as a user: their own), "
        "or on the HOMEs named: the computers that sync each (from their records), their last "
        "successful sync and result, those behind (notify.stale_after) or stale "
        "(client.forget_after), and whether a session of the user is live. Reads the records "
        "only, never the homes' files, unless --conflict-copies is given.")
    report.add_argument("homes", nargs="*", type=Path, metavar="HOME",
                        help="a server home to report on (default: from server.home and the "
                        "passwd database)")
    report.add_argument("--json", action="store_true", help="print the report as JSON")
    report.add_argument("--prometheus", type=Path, metavar="FILE",
                        help="write the report to FILE in the Prometheus text format (for "
                        "node-exporter's textfile collector), replacing it atomically")
    report.add_argument("--conflict-copies", action="store_true",
                        help="also count the conflict copies in each home (names only, at most "
                        "200000 entries per home)")
    report.set_defaults(run=_run_server_report)


def _report_limits(args: argparse.Namespace) -> tuple[Any, str]:
    """The thresholds for stale computers from the configuration, or its defaults (a server
    need not have a client configuration) with a note saying so."""
    from roaming_homes import config
    from roaming_homes.server.report import Limits

    try:
        cfg, _ = _load(args)
    except RoamingHomesError as exc:
        schema = config.SCHEMA
        return (Limits(schema["notify"]["stale_after"].default,
                       schema["client"]["forget_after"].default),
                f"configuration not loaded, default thresholds used: {exc.message}")
    return Limits(cfg["notify"]["stale_after"], cfg["client"]["forget_after"]), ""


_PATTERN_USER = "rh-pattern-user"  # stands for %u while the configured server.home is read


def _home_pattern(args: argparse.Namespace) -> str | None:
    """The configured `server.home` (or `server.root`) as a pattern, %u and %h unexpanded; None
    without a configuration (a server need not have one)."""
    import dataclasses

    from roaming_homes import config
    from roaming_homes.paths import Locations

    marker_home = Path("/rh-pattern-home")
    locations = dataclasses.replace(Locations.from_env(), user=_PATTERN_USER, home=marker_home)
    try:
        server = config.load(locations, args.config)["server"]
    except RoamingHomesError:
        return None
    value = server["root"] or server["home"]
    return (value.replace("%", "%%").replace(_PATTERN_USER, "%u")
            .replace(str(marker_home), "%h")) if value else None


def _run_server_report(args: argparse.Namespace) -> int:
    from roaming_homes.server import report

    limits, note = _report_limits(args)
    homes = ([(home, report.owner_name(home)) for home in args.homes] if args.homes
             else report.server_homes(_home_pattern(args), all_users=os.geteuid() == 0))
    made = report.make(homes, limits, search=args.conflict_copies, note=note)
    if args.prometheus is not None:
        try:
            report.write_textfile(args.prometheus, report.prometheus(made))
        except OSError as exc:
            raise RoamingHomesError(f"cannot write {args.prometheus}: {exc.strerror}",
                                    ExitCode.FAILED) from None
    if args.json:
        _print_json(made.to_dict())
    elif args.prometheus is not None:
        _say(args, f"{len(made.homes)} home(s) reported to {args.prometheus}")
    else:
        print(report.render(made))
    return 0


# --- main -------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="Roaming home directories: two-way sync of your "
                     "home with a server, by unison over ssh.")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    parser.add_argument("--config", type=Path, metavar="FILE",
                        help="configuration file (default: $ROAMING_HOMES_CONFIG or "
                        "/etc/roaming-homes/roaming-homes.toml)")
    loud = parser.add_mutually_exclusive_group()
    loud.add_argument("-v", "--verbose", action="store_true", help="show unison's output")
    loud.add_argument("-q", "--quiet", action="store_true", help="print only errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True,
                                parser_class=_Parser)
    for add in (_add_sync, _add_status, _add_pause, _add_check, _add_conflicts, _add_resolve,
                _add_restore, _add_config, _add_daemon, _add_server):
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    import logging

    from roaming_homes import logs

    args = build_parser().parse_args(argv)
    logs.setup(logging.DEBUG if args.verbose else logging.WARNING if args.quiet
               else logging.INFO)
    try:
        return int(args.run(args))
    except RoamingHomesError as exc:
        _warn(f"error: {exc.message}")
        return int(exc.code)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # stdout closed early (e.g. piped into head): not an error of ours.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
