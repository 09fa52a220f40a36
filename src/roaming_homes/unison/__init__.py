"""Everything that talks to unison and ssh, and the only code that reads their output:

- `runner`: the one place that starts a program, logging its argv;
- `profile`: unison's profile and arguments for a pass;
- `output`: unison's output read into typed results (the summary, troubles, the plan);
- `dialogue`: a pass's unison run, its plan judged before anything propagates;
- `ssh`: the connection to the server (shared master, failures as typed reasons);
- `ignore`: unison's ignore rules, for counting files as unison sees them;
- `fsmonitor`, `inotify`: our `unison-fsmonitor` (real-time mode), and its kernel interface.
"""
