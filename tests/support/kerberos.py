"""A throwaway MIT Kerberos realm on loopback, and an sshd that accepts only GSSAPI logins.

Everything lives in one temporary directory and is configured through the environment:
clients, the KDC and sshd read `KRB5_CONFIG` (never /etc/krb5.conf), the KDC listens on a free
port of 127.0.0.1 (never 88), sshd reads its keytab from `KRB5_KTNAME` and keeps its replay
cache in `KRB5RCACHEDIR` (else /var/tmp). The principal is the current user's, so no system
account is made: sshd maps `USER@RH.TEST` to the local USER (krb5_kuserok, default realm).

Things that matter (MIT krb5 1.20, OpenSSH 9.2):
- ssh asks for `host/<HostName>`: clients must connect to `localhost` (the principal in the
  keytab), and libkrb5 must not canonicalize names (`dns_canonicalize_hostname`, `rdns`).
- `GSSAPIStrictAcceptorCheck no`: sshd otherwise accepts only `host/$(hostname)`.
- A client keytab (`KRB5_CLIENT_KTNAME`, /etc/krb5/user/UID/client.keytab) would silently
  renew an expired ticket: tests of expiry must have none.
- A cached service ticket lets ssh log in while the KDC is down; a ticket-granting ticket alone
  does not.
"""

from __future__ import annotations

import base64
import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from tests.support.sshd import SshServer

REALM = "RH.TEST"
SYSTEM_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
PROGRAMS = ("krb5kdc", "kdb5_util", "kadmin.local", "kinit", "klist", "kdestroy")


def available() -> bool:
    """Whether MIT Kerberos' KDC and client tools are installed (scripts/setup installs them)."""
    return all(shutil.which(name, path=f"{os.environ.get('PATH', '')}:{SYSTEM_PATH}")
               for name in PROGRAMS)


def _free_port() -> int:
    """A port free on 127.0.0.1 for both TCP and UDP (the KDC listens on both)."""
    for _ in range(200):
        with socket.socket() as tcp, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            tcp.bind(("127.0.0.1", 0))
            port: int = tcp.getsockname()[1]
            try:
                udp.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port for the KDC")


def _wait_port(port: int, proc: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(f"{what} exited with {proc.returncode}") from None
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on port {port}")


class Realm:
    """A KDC for REALM with the current user's principal and `host/localhost`, in `workdir`."""

    def __init__(self, workdir: Path, name: str = REALM) -> None:
        self.dir = workdir
        self.name = name
        self.user = pwd.getpwuid(os.getuid()).pw_name
        self.principal = f"{self.user}@{name}"
        self.port = _free_port()
        self.config = workdir / "krb5.conf"
        self.kdc_profile = workdir / "kdc.conf"
        self.user_keytab = workdir / "user.keytab"
        self.host_keytab = workdir / "sshd.keytab"
        self.kdc: subprocess.Popen[bytes] | None = None

    @property
    def env(self) -> dict[str, str]:
        """What every Kerberos program of the realm needs (a client adds its KRB5CCNAME)."""
        return {"KRB5_CONFIG": str(self.config), "KRB5_KDC_PROFILE": str(self.kdc_profile)}

    def _run(self, *argv: str) -> None:
        subprocess.run(argv, env={"PATH": SYSTEM_PATH, **self.env}, check=True,
                       stdin=subprocess.DEVNULL, capture_output=True, timeout=30)

    def create(self) -> Realm:
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "kdc").mkdir()
        self.config.write_text(
            f"[libdefaults]\n  default_realm = {self.name}\n  dns_lookup_realm = false\n"
            "  dns_lookup_kdc = false\n  dns_canonicalize_hostname = false\n  rdns = false\n"
            "  udp_preference_limit = 1\n  ticket_lifetime = 10h\n"
            f"[realms]\n  {self.name} = {{\n    kdc = 127.0.0.1:{self.port}\n  }}\n"
            f"[domain_realm]\n  localhost = {self.name}\n")
        db = self.dir / "kdc"
        self.kdc_profile.write_text(
            f"[kdcdefaults]\n  kdc_listen = 127.0.0.1:{self.port}\n"
            f"  kdc_tcp_listen = 127.0.0.1:{self.port}\n"
            f"[realms]\n  {self.name} = {{\n    database_name = {db / 'principal'}\n"
            f"    key_stash_file = {db / 'stash'}\n    acl_file = {db / 'kadm5.acl'}\n"
            "    max_life = 10h\n    default_principal_flags = +preauth\n"
            "    supported_enctypes = aes256-cts-hmac-sha1-96:normal\n  }\n"
            f"[logging]\n  kdc = FILE:{self.dir / 'kdc.log'}\n")
        password = base64.b64encode(os.urandom(18)).decode()
        self._run("kdb5_util", "create", "-s", "-r", self.name, "-P", password)
        for query in (f"addprinc -randkey {self.principal}",
                      f"addprinc -randkey host/localhost@{self.name}",
                      f"ktadd -k {self.host_keytab} host/localhost@{self.name}",
                      f"ktadd -k {self.user_keytab} {self.principal}"):
            self._run("kadmin.local", "-r", self.name, "-q", query)
        self.start_kdc()
        return self

    def start_kdc(self) -> None:
        """Run the KDC in the foreground of a process of ours (-n): its PID is `kdc.pid`."""
        self.kdc = subprocess.Popen(["krb5kdc", "-n", "-r", self.name],
                                    env={"PATH": SYSTEM_PATH, **self.env},
                                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL, start_new_session=True)
        _wait_port(self.port, self.kdc, "krb5kdc")

    def stop_kdc(self) -> None:
        """Stop our KDC (by its PID); clients then get "connection refused" at once."""
        if self.kdc is None:
            return
        self.kdc.send_signal(signal.SIGTERM)
        try:
            self.kdc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.kdc.kill()
            self.kdc.wait()
        self.kdc = None

    @contextlib.contextmanager
    def hung_kdc(self) -> Iterator[None]:
        """Our KDC replaced by one that never answers: its port accepts TCP connections (the
        kernel's backlog) and UDP datagrams, and nothing replies. The real one is back after."""
        self.stop_kdc()
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp, \
                socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            tcp.bind(("127.0.0.1", self.port))
            tcp.listen(64)
            udp.bind(("127.0.0.1", self.port))
            try:
                yield
            finally:
                tcp.close()
                udp.close()
                self.start_kdc()

    def client_env(self, ccache: Path | str) -> dict[str, str]:
        """A client of the realm whose ticket cache is the file `ccache` (a Path) or the cache
        of that name (a str: "KEYRING:user:NAME")."""
        return {**self.env, "KRB5CCNAME": ccache if isinstance(ccache, str) else f"FILE:{ccache}"}

    def kinit(self, ccache: Path | str, lifetime: str = "") -> None:
        """Get a ticket into `ccache` from the user's keytab (`lifetime` e.g. "3s")."""
        subprocess.run(["kinit", *(["-l", lifetime] if lifetime else []), "-k", "-t",
                        str(self.user_keytab), self.principal],
                       env={"PATH": SYSTEM_PATH, **self.client_env(ccache)}, check=True,
                       stdin=subprocess.DEVNULL, capture_output=True, timeout=30)

    def close(self) -> None:
        self.stop_kdc()
        shutil.rmtree(self.dir, ignore_errors=True)


class GssapiSshServer(SshServer):
    """An `SshServer` that accepts GSSAPI logins of `realm` only (no keys, no passwords).

    Clients must name it `localhost` (the host principal), with GSSAPI enabled in their options.
    """

    def __init__(self, workdir: Path, realm: Realm, **kwargs: object) -> None:
        rcache = workdir / "rcache"
        rcache.mkdir(parents=True, exist_ok=True)
        super().__init__(  # type: ignore[arg-type]
            workdir,
            extra_config=("PubkeyAuthentication no\nGSSAPIAuthentication yes\n"
                          "GSSAPICleanupCredentials yes\nGSSAPIStrictAcceptorCheck no\n"
                          "LogLevel VERBOSE\n"),
            # sshd (and its per-connection children) read these; nothing else leaks in.
            wrapper=["env", "-i", f"PATH={SYSTEM_PATH}", f"KRB5_CONFIG={realm.config}",
                     f"KRB5_KTNAME=FILE:{realm.host_keytab}", f"KRB5RCACHEDIR={rcache}"],
            **kwargs)
        host_pub = (self.workdir / "host_key.pub").read_text().split()
        with self.known_hosts.open("a") as known:
            known.write(f"[localhost]:{self.port} {host_pub[0]} {host_pub[1]}\n")

    def ssh_options(self) -> list[str]:
        """No user ssh config; GSSAPI on, keys off (as `server.ssh_options` would say)."""
        return ["-F", "none", "-o", f"UserKnownHostsFile={self.known_hosts}",
                "-o", "GSSAPIAuthentication=yes", "-o", "PubkeyAuthentication=no"]

