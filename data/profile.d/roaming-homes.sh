# roaming-homes: sync the home once at login, in the background, for sessions without the
# systemd user service (tty logins on minimal systems). It does nothing when the session daemon
# runs (`--skip-if-daemon`) or for an excluded user (`sync.excluded_users`): `sync` says so and
# exits 0. Sourced by login shells: POSIX sh, no output, never waits.
if command -v roaming-homes >/dev/null 2>&1; then
    (roaming-homes -q sync --skip-if-daemon </dev/null >/dev/null 2>&1 &)
fi
