"""An emulated network link to a real sshd: bandwidth by `tc … tbf`, latency by `bench.relay`.

    client ──loopback──> relay (RTT/2 each way) ──veth, tbf each way──> sshd in a namespace

The sshd runs in a network namespace of its own, `rhbench-<pid>-link`, reached over a veth
pair whose two ends are each capped at the profile's rate by a token bucket (`tbf`; this kernel
has no `netem`, which would have done the delay too). The delay is added by a user-space relay on
loopback in front of it. Only what is created here is touched, and `close` removes all of it:
the relay, the sshd, the namespace (and with it the veth pair).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import statistics
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from tests.support.sshd import SshServer

from bench.blackhole import NFT_DROP, Veth, run
from bench.relay import Counters, Relay


@dataclasses.dataclass(frozen=True)
class Profile:
    name: str
    mbit: float  # each way
    rtt_ms: float

    @property
    def label(self) -> str:
        rate = f"{self.mbit / 1000:g} Gbit/s" if self.mbit >= 1000 else f"{self.mbit:g} Mbit/s"
        return f"{self.name} ({rate}, {self.rtt_ms:g} ms RTT)"

    @property
    def bytes_per_second(self) -> float:
        return self.mbit * 1e6 / 8


PROFILES = {profile.name: profile for profile in (
    Profile("lan", 1000, 1), Profile("broadband", 50, 30), Profile("mobile", 10, 80))}


def tbf(device: str, profile: Profile) -> list[str]:
    """`tc` arguments capping `device`'s output at the profile's rate.

    The bucket holds 5 ms of the rate, and never less than 128 KiB: the veth hands the qdisc
    segmentation-offloaded packets of up to 64 KiB, and a bucket smaller than one packet drops
    it. The queue may hold 100 ms of the rate, more than any profile's bandwidth-delay product.
    """
    burst = max(int(profile.bytes_per_second * 0.005), 128 << 10)
    return ["qdisc", "add", "dev", device, "root", "tbf", "rate", f"{profile.mbit:g}mbit",
            "burst", str(burst), "latency", "100ms"]


class Link:
    """A real sshd behind an emulated link. `front` is that server as clients must use it
    (through the relay, on loopback)."""

    def __init__(self, workdir: Path, profile: Profile, env: dict[str, str] | None = None) -> None:
        self.workdir = workdir
        self.profile = profile
        self.env = env or {}
        self.veth = Veth(f"rhbench-{os.getpid()}-link", f"rhl{os.getpid() % 10**7}")
        self.namespace, self.address = self.veth.namespace, self.veth.address
        self.sshd: SshServer | None = None
        self.relay: Relay | None = None
        self.front: SshServer

    def __enter__(self) -> Link:
        try:
            self._network()
            self.sshd = SshServer(self.workdir, listen=self.address, env=self.env,
                                  wrapper=["ip", "netns", "exec", self.namespace]).start()
            self.relay = Relay((self.address, self.sshd.port),
                               self.profile.rtt_ms / 2000).start()
            # The same server, as seen through the relay: its known_hosts names the relay's port.
            self.front = dataclasses.replace(self.sshd, listen="127.0.0.1",
                                             port=self.relay.port, proc=None)
        except BaseException:
            self.close()
            raise
        return self

    def _network(self) -> None:
        self.veth.up()
        run(["tc", *tbf(self.veth.outer, self.profile)])
        run(["tc", "-n", self.namespace, *tbf(self.veth.inner, self.profile)])

    def counters(self) -> Counters:
        """What the relay carried so far, over every connection."""
        assert self.relay is not None
        return self.relay.snapshot()

    @contextlib.contextmanager
    def cut(self) -> Iterator[None]:
        """The link drops every packet (the server's side drops its input), until the end."""
        run(["ip", "netns", "exec", self.namespace, "nft", "-f", "-"], NFT_DROP)
        try:
            yield
        finally:
            run(["ip", "netns", "exec", self.namespace, "nft", "delete", "table", "inet",
                 "rhbench"])

    def close(self) -> None:
        if self.relay is not None:
            self.relay.close()
            self.relay = None
        if self.sshd is not None:
            self.sshd.stop()
            self.sshd = None
        self.veth.close()

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- validating the emulation -----------------------------------------------------------------

@dataclasses.dataclass
class Validation:
    rtt: float  # seconds, median of ssh echo round trips
    down: float  # bytes per second, server -> client, through ssh
    up: float  # bytes per second, client -> server

    def describe(self, profile: Profile) -> str:
        return (f"{profile.label}: measured through ssh over the link: round trip "
                f"{self.rtt * 1000:.1f} ms, download {self.down * 8 / 1e6:.1f} Mbit/s, "
                f"upload {self.up * 8 / 1e6:.1f} Mbit/s")


def _ssh(server: SshServer) -> list[str]:
    return ["ssh", *server.ssh_options(), "-o", "BatchMode=yes", "-p", str(server.port),
            f"{server.user}@127.0.0.1"]


def echo_rtt(server: SshServer, rounds: int = 20) -> float:
    """Median time for one line through `ssh … cat` and back: the round trip an ssh session
    pays for each request/response turn (link and ssh's own processing)."""
    with subprocess.Popen([*_ssh(server), "cat"], stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE) as proc:
        assert proc.stdin is not None and proc.stdout is not None
        times = []
        for _ in range(rounds + 1):
            started = time.perf_counter()
            proc.stdin.write(b"x\n")
            proc.stdin.flush()
            proc.stdout.readline()
            times.append(time.perf_counter() - started)
        proc.stdin.close()
    return statistics.median(times[1:])


def _session(server: SshServer, command: str, size: int = 0) -> float:
    """Seconds of one ssh session running `command`, fed `size` random bytes (0: none)."""
    with open(os.devnull, "wb") as sink:
        source = subprocess.Popen(["head", "-c", str(size), "/dev/urandom"],
                                  stdout=subprocess.PIPE) if size else None
        started = time.perf_counter()
        subprocess.run([*_ssh(server), command], stdin=source.stdout if source else
                       subprocess.DEVNULL, stdout=sink, check=True, timeout=600)
        elapsed = time.perf_counter() - started
        if source is not None:
            source.wait()
    return elapsed


def validate(link: Link, seconds: float = 2.0) -> Validation:
    """What the link gives through ssh: `seconds` of the profile's rate of random data each way
    (random: ssh's compression, when on, must not flatter it), less a session's own setup."""
    size = int(link.profile.bytes_per_second * seconds)
    setup = min(_session(link.front, "true") for _ in range(2))
    down = _session(link.front, f"head -c {size} /dev/urandom") - setup
    up = _session(link.front, "cat > /dev/null", size) - setup
    return Validation(echo_rtt(link.front), size / down, size / up)
