"""Homes on real shared storage behind several sshd front-ends (docs/testing.md §3).

A GlusterFS volume (replica 2, both bricks in a temporary directory) stands for the
organisation's distributed file system. Each front-end is a machine of its own as far as sshd,
unison and the archives can tell: a holder process in its own mount and UTS namespace
(`unshare --mount --uts`) with its own host name and its own FUSE mount of the volume, at the
same path as everywhere, and an sshd started inside those namespaces (`nsenter`) on its own
loopback address (127.0.0.1, 127.0.0.2, ...), one port for all. The test itself reads the
homes through a mount of its own at that same path.

Host keys: every front-end has its own; all are in one known_hosts, except for the front-ends
made with `certified`: their host key is signed by an SSH CA (`ssh-keygen -s`) and the
known_hosts trusts them only through an `@cert-authority` line.

Everything started is stopped by its PID in `close`, the volume deleted, the directories
removed. glusterd keeps state in /var/lib/glusterd: the volume name is unique to the run.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

from tests.support.procfs import processes
from tests.support.sshd import SshServer, free_port
from tests.support.waiting import wait_for

GLUSTER = ["gluster", "--mode=script"]


def unavailable() -> str | None:
    """Why shared-storage tests cannot run here, or None."""
    if os.geteuid() != 0:
        return "needs root (glusterd, FUSE mounts, namespaces)"
    for tool in ("glusterd", "gluster", "unshare", "nsenter", "mount.glusterfs"):
        if shutil.which(tool) is None and not Path("/sbin", tool).exists():
            return f"{tool} is not installed (apt-get install glusterfs-server)"
    if not Path("/dev/fuse").exists():
        return "no /dev/fuse"
    return None


def _run(argv: Sequence[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)


def _mount_ns(pid: int) -> str:
    return os.readlink(f"/proc/{pid}/ns/mnt")


def _gone(pid: int) -> bool:
    """Whether `pid` has ended (a zombie too: PID 1 here reaps orphans lazily)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()[0]
    except OSError:
        return True
    return state == b"Z"


def _test_glusterds() -> list[int]:
    """glusterd processes that a test started: their log file is in a test's directory."""
    mark = f"--log-file={tempfile.gettempdir()}/rh-gluster-".encode()
    return [pid for pid, read in processes("comm", "cmdline")
            if read["comm"].strip() == b"glusterd" and not _gone(pid)
            and any(arg.startswith(mark) for arg in read["cmdline"].split(b"\0"))]


def _fuse_clients(namespace: str) -> list[int]:
    """The glusterfs FUSE client processes whose mount namespace is `namespace`."""
    found = []
    for pid, read in processes("comm"):
        if read["comm"].strip() == b"glusterfs":
            with contextlib.suppress(OSError):
                if _mount_ns(pid) == namespace:
                    found.append(pid)
    return found


class Volume:
    """glusterd (ours, unless one already runs) and a replica-2 volume with a unique name."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.name = f"rh{uuid.uuid4().hex[:12]}"
        self.host = os.uname().nodename  # bricks must name this host
        for brick in ("b1", "b2"):
            (base / brick).mkdir(parents=True)
        wait_for(lambda: self._glusterd() and self._create().returncode == 0, 60,
                 f"volume {self.name} created")
        # As docs/server.md asks of a volume served by several front-ends: the bricks tell
        # every client when a file changes, so that no front-end lists a folder from its cache.
        for option in ("features.cache-invalidation", "performance.cache-invalidation"):
            done = _run([*GLUSTER, "volume", "set", self.name, option, "on"])
            assert done.returncode == 0, done.stdout + done.stderr
        started = _run([*GLUSTER, "volume", "start", self.name])
        assert started.returncode == 0, started.stdout + started.stderr

    def _glusterd(self) -> bool:
        """Whether glusterd answers; starts one when none does (another test process may
        start one at the same moment: then its start fails, and ours answers soon)."""
        if _run([*GLUSTER, "volume", "list"], timeout=10).returncode == 0:
            return True
        # it daemonizes; the log file in our directory marks it as a test's (`_ours`)
        _run(["glusterd", "-p", str(self.base / "glusterd.pid"),
              f"--log-file={self.base / 'glusterd.log'}"], timeout=30)
        return False

    def _create(self) -> subprocess.CompletedProcess[str]:
        return _run([*GLUSTER, "volume", "create", self.name, "replica", "2",
                     f"{self.host}:{self.base / 'b1'}", f"{self.host}:{self.base / 'b2'}",
                     "force"])

    @property
    def source(self) -> str:
        return f"{self.host}:/{self.name}"

    def close(self) -> None:
        _run([*GLUSTER, "volume", "stop", self.name])
        _run([*GLUSTER, "volume", "delete", self.name])
        volumes = _run([*GLUSTER, "volume", "list"], timeout=10).stdout.split()
        if any(re.fullmatch(r"rh[0-9a-f]{12}", name) for name in volumes):
            return  # another cluster's: glusterd stays for it
        started = _test_glusterds()
        for pid in started:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        # its hooks (gluster system:: getwd) end with it
        wait_for(lambda: all(_gone(pid) for pid in started), 30, "glusterd stopped")


class FrontEnd:
    """A front-end: its namespaces (held by a sleeping process), its FUSE mount of the volume
    at `mount`, and its sshd on `address`:`port`."""

    def __init__(self, name: str, address: str, port: int, workdir: Path, volume: Volume,
                 mount: Path, env: dict[str, str], extra_config: str = "") -> None:
        self.name, self.address = name, address
        script = (f"hostname {name} && mount -t glusterfs {volume.source} {mount} && "
                  "echo ready && exec sleep infinity")
        self.holder = subprocess.Popen(["unshare", "--mount", "--uts", "--propagation",
                                        "private", "sh", "-c", script],
                                       stdout=subprocess.PIPE, stdin=subprocess.DEVNULL,
                                       start_new_session=True)
        assert self.holder.stdout is not None
        ready = self.holder.stdout.readline()
        assert ready == b"ready\n", f"front-end {name}: its mount failed"
        self.fuse = _fuse_clients(_mount_ns(self.holder.pid))
        self.sshd = SshServer(workdir, port=port, listen=address, env=env,
                              server_unison_dir=mount / "unison",
                              wrapper=["nsenter", "-t", str(self.holder.pid), "-m", "-u", "--"],
                              extra_config=extra_config)

    def hostname(self) -> str:
        """The host name this front-end's processes see (its UTS namespace)."""
        return _run(["nsenter", "-t", str(self.holder.pid), "-u", "--", "hostname"]).stdout.strip()

    def close(self) -> None:
        self.sshd.stop()
        for pid in self.fuse:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        self.holder.kill()
        self.holder.wait()
        wait_for(lambda: all(_gone(pid) for pid in self.fuse), 10, "FUSE clients stopped")


class Cluster:
    """`count` front-ends fe1, fe2, ... on 127.0.0.1, 127.0.0.2, ... serving one GlusterFS
    volume mounted at `mount`; `certified` names the front-ends trusted through a CA."""

    def __init__(self, count: int = 3, certified: Sequence[str] = ("fe3",),
                 env: dict[str, str] | None = None) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="rh-gluster-", dir="/tmp"))
        self.mount = self.base / "homes"
        self.mount.mkdir()
        self.port = free_port()
        self.fronts: list[FrontEnd] = []
        self.volume: Volume | None = None
        self.viewing = False
        try:
            self.volume = Volume(self.base / "volume")
            self._keys()
            for number in range(1, count + 1):
                self._add(f"fe{number}", f"127.0.0.{number}", env or {}, certified)
            # After the front-ends: their namespaces would copy this mount, and mount.glusterfs
            # refuses a second mount at the same path.
            subprocess.run(["mount", "-t", "glusterfs", self.volume.source, str(self.mount)],
                           check=True, timeout=60)
            self.viewing = True
            self.known_hosts.write_text("".join(self._known(front, certified)
                                                for front in self.fronts))
            for front in self.fronts:
                front.sshd.start()
        except BaseException:
            self.close()
            raise

    def _keys(self) -> None:
        self.user_key = self.base / "user_key"
        self.ca_key = self.base / "host_ca"
        for key in (self.user_key, self.ca_key):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)],
                           check=True)
        self.known_hosts = self.base / "known_hosts"

    def _add(self, name: str, address: str, env: dict[str, str],
             certified: Sequence[str]) -> None:
        workdir = self.base / name
        workdir.mkdir()
        for suffix in ("", ".pub"):  # one user key that every front-end accepts
            shutil.copy(self.user_key.with_name(f"user_key{suffix}"), workdir / f"user_key{suffix}")
        extra = ""
        if name in certified:
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f",
                            str(workdir / "host_key")], check=True)
            subprocess.run(["ssh-keygen", "-q", "-s", str(self.ca_key), "-I", name, "-h",
                            "-n", address, str(workdir / "host_key.pub")], check=True)
            extra = f"HostCertificate {workdir / 'host_key-cert.pub'}\n"
        assert self.volume is not None
        self.fronts.append(FrontEnd(name, address, self.port, workdir, self.volume,
                                    self.mount, env, extra))

    def _known(self, front: FrontEnd, certified: Sequence[str]) -> str:
        if front.name in certified:
            ca = (self.ca_key.with_name("host_ca.pub")).read_text().split()
            return f"@cert-authority [{front.address}]:{self.port} {ca[0]} {ca[1]}\n"
        return front.sshd.known_hosts.read_text()

    @property
    def hosts(self) -> list[str]:
        return [front.address for front in self.fronts]

    def ssh_options(self) -> list[str]:
        return ["-F", "none", "-i", str(self.user_key), "-o", "IdentitiesOnly=yes",
                "-o", f"UserKnownHostsFile={self.known_hosts}"]

    def front(self, name: str) -> FrontEnd:
        return next(front for front in self.fronts if front.name == name)

    def serving(self, name: str) -> bool:
        """Whether front-end `name` has a login session open (its sshd's connections)."""
        return bool(self.front(name).sshd.connection_pids())

    def close(self) -> None:
        for front in self.fronts:
            front.close()
        if self.viewing:
            _run(["umount", str(self.mount)])
        if self.volume is not None:
            self.volume.close()
        time.sleep(0.1)
        shutil.rmtree(self.base, ignore_errors=True)
