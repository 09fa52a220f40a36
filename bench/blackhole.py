"""An address that swallows packets: a veth pair into a network namespace that drops all input.

Only what is created here is touched: the namespace `rhbench-<pid>`, one veth pair and its
link-local /30. Deleting the namespace removes the pair; `close` does that and more.
"""

from __future__ import annotations

import ipaddress
import os
import subprocess

NFT_DROP = """\
table inet rhbench {
  chain input {
    type filter hook input priority 0; policy drop;
  }
}
"""


def run(argv: list[str], stdin: str = "") -> None:
    result = subprocess.run(argv, input=stdin, text=True, capture_output=True, timeout=30,
                            check=False)
    if result.returncode != 0:
        raise OSError(f"{' '.join(argv)}: {result.stderr.strip() or result.returncode}")


def ip(*args: str) -> None:
    run(["ip", *args])


def free_subnet() -> ipaddress.IPv4Network:
    """A /30 in 169.254.0.0/16 no route of this machine uses yet."""
    routes = subprocess.run(["ip", "-4", "route", "show", "table", "all"], capture_output=True,
                            text=True, check=True).stdout
    used = [ipaddress.ip_network(word, strict=False) for line in routes.splitlines()
            for word in line.split()[:1] if word[0].isdigit() and "/" in word]
    start = os.getpid() % 200 + 40
    for third in range(start, start + 50):
        subnet = ipaddress.ip_network(f"169.254.{third % 250}.0/30")
        if not any(subnet.overlaps(other) for other in used):
            return subnet
    raise RuntimeError("no free 169.254.x.0/30 for the black hole")


class Veth:
    """A veth pair from here into a new network namespace, on a free link-local /30: `local`
    on this side, `address` inside. `close` deletes the namespace, and with it the pair."""

    def __init__(self, namespace: str, outer: str) -> None:
        self.namespace, self.outer, self.inner = namespace, outer, f"{outer}n"
        subnet = free_subnet()
        hosts = list(subnet.hosts())
        self.prefix = subnet.prefixlen
        self.local, self.address = str(hosts[0]), str(hosts[1])

    def up(self) -> None:
        """Make the namespace and the pair, with both ends (and the namespace's loopback) up."""
        ip("netns", "add", self.namespace)
        ip("link", "add", self.outer, "type", "veth", "peer", "name", self.inner,
           "netns", self.namespace)
        ip("addr", "add", f"{self.local}/{self.prefix}", "dev", self.outer)
        ip("link", "set", self.outer, "up")
        ip("-n", self.namespace, "addr", "add", f"{self.address}/{self.prefix}",
           "dev", self.inner)
        ip("-n", self.namespace, "link", "set", self.inner, "up")
        ip("-n", self.namespace, "link", "set", "lo", "up")

    def close(self) -> None:
        for args in (("netns", "delete", self.namespace), ("link", "delete", self.outer)):
            subprocess.run(["ip", *args], capture_output=True, check=False, timeout=30)


class BlackHole:
    """`address` answers nothing: TCP SYNs to it are dropped inside the namespace."""

    def __init__(self) -> None:
        self.veth = Veth(f"rhbench-{os.getpid()}", f"rhb{os.getpid() % 10**7}")
        self.address = self.veth.address

    def __enter__(self) -> BlackHole:
        try:
            self.veth.up()
            run(["ip", "netns", "exec", self.veth.namespace, "nft", "-f", "-"], NFT_DROP)
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        self.veth.close()

    def __exit__(self, *exc: object) -> None:
        self.close()
