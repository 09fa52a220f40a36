"""The RPM and the .deb built by scripts/package: their file lists, and the installed .deb.

The .deb is installed on this machine with apt (its dependencies from Debian), then the
INSTALLED /usr/bin/roaming-homes syncs and runs `check` against the test sshd; the teardown
purges it and every package the install pulled in, so the machine is left as it was.
Deselect locally with `-m "not packages"`; CI runs them (they are selected by default).
"""

from __future__ import annotations

import contextlib
import fcntl
import gzip
import json
import os
import shutil
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from roaming_homes import __version__
from tests.support.homes import Setup
from tests.support.sshd import SshServer

pytestmark = pytest.mark.packages

ROOT = Path(__file__).resolve().parents[1]
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
APT = ["apt-get", "-y", "-q", "-o", "DPkg::Lock::Timeout=300"]
ENABLED_LINK = Path("/etc/systemd/user/default.target.wants/roaming-homes.service")

# What both packages install outside Python's own directory.
COMMON_FILES = {
    "/usr/bin/roaming-homes", "/usr/bin/unison-fsmonitor",
    "/usr/lib/systemd/user/roaming-homes.service",
    "/etc/roaming-homes/roaming-homes.toml",
    "/etc/profile.d/roaming-homes.sh",
    "/usr/libexec/roaming-homes/logout",
}
README = "/usr/share/doc/roaming-homes/README.md"
# data/server: samples for the server, as docs (an administrator installs them on purpose).
EXAMPLES = tuple(f"/usr/share/doc/roaming-homes/examples/roaming-homes-report.{kind}"
                 for kind in ("service", "timer"))
# The generated man pages (gzipped by dh_installman, and by rpm's brp-compress where it runs).
MAN_PAGES = ("/usr/share/man/man1/roaming-homes.1", "/usr/share/man/man5/roaming-homes.toml.5")
MODULES = {"__init__.py", "cli.py", "actions/check.py", "unison/fsmonitor.py", "unison/inotify.py",
           "actions/daemon.py", "desktop/listener.py"}


def _run(*args: str, timeout: float = 300) -> str:
    result = subprocess.run(args, capture_output=True, text=True, timeout=timeout,
                            check=False, env={**os.environ, "PATH": SYSTEM_PATH,
                                              "DEBIAN_FRONTEND": "noninteractive"})
    assert result.returncode == 0, f"{args}: {result.stdout[-2000:]}{result.stderr[-2000:]}"
    return result.stdout


@contextlib.contextmanager
def _one_worker_at_a_time(factory: pytest.TempPathFactory, what: str) -> Iterator[None]:
    """Held while building (scripts/package writes into the source tree) or while the package
    is installed (apt and dpkg are the machine's): this module's tests on another xdist worker
    wait their turn. The lock file is in the run's temporary directory, which every worker of
    the run shares."""
    base = factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    with (shared / f"packages-{what}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


@pytest.fixture(scope="session")
def packages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """sdist, wheel, RPM and .deb, built once by scripts/package."""
    out = tmp_path_factory.mktemp("dist")
    with _one_worker_at_a_time(tmp_path_factory, "build"):
        _run(str(ROOT / "scripts" / "package"), str(out), timeout=600)
    found = {"sdist": f"roaming_homes-{__version__}.tar.gz",
             "wheel": f"roaming_homes-{__version__}-py3-none-any.whl",
             "rpm": f"roaming-homes-{__version__}-1.noarch.rpm",
             "deb": f"roaming-homes_{__version__}_all.deb"}
    assert sorted(p.name for p in out.iterdir()) == sorted(found.values())
    return {kind: out / name for kind, name in found.items()}


def _assert_docs(files: set[str]) -> None:
    """The man pages (compressed or not), the README and the server's report timer samples are
    in a package's file list."""
    for page in MAN_PAGES:
        assert {page, f"{page}.gz"} & files, page
    assert README in files
    assert set(EXAMPLES) <= files


def _installed_packages() -> set[str]:
    out = _run("dpkg-query", "-W", "-f=${Package} ${db:Status-Status}\n")
    return {line.split()[0] for line in out.splitlines() if line.endswith(" installed")}


def test_sdist_carries_the_packaging_and_the_session_files(packages: dict[str, Path]) -> None:
    with tarfile.open(packages["sdist"]) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    assert {"packaging/rpm/roaming-homes.spec", "packaging/debian/control",
            "packaging/debian/rules", "data/systemd/roaming-homes.service",
            "data/profile.d/roaming-homes.sh", "data/roaming-homes-logout",
            "data/roaming-homes.toml"} <= names


def test_rpm_file_list_dependencies_and_scriptlets(packages: dict[str, Path]) -> None:
    rpm = str(packages["rpm"])
    files = set(_run("rpm", "-qlp", rpm).split())
    assert files >= COMMON_FILES
    _assert_docs(files)
    assert set(_run("rpm", "-qdp", rpm).split()) >= {README}
    (sitelib,) = {f.rsplit("/", 1)[0] for f in files if f.endswith("/roaming_homes/cli.py")}
    assert sitelib.startswith("/usr/lib/python3.")
    assert sitelib.endswith("/site-packages/roaming_homes")
    assert {f"{sitelib}/{m}" for m in MODULES} <= files
    assert f"{sitelib}-{__version__}.dist-info/entry_points.txt" in files
    assert set(_run("rpm", "-qcp", rpm).split()) == {
        "/etc/roaming-homes/roaming-homes.toml", "/etc/profile.d/roaming-homes.sh"}
    # %config(noreplace): an edited config survives an upgrade.
    flags = _run("rpm", "-qp", "--qf", "[%{FILEFLAGS:fflags} %{FILENAMES}\n]", rpm)
    assert "cn /etc/roaming-homes/roaming-homes.toml" in flags
    modes = dict(line.split()[::-1] for line in _run(
        "rpm", "-qp", "--qf", "[%{FILEMODES:perms} %{FILENAMES}\n]", rpm).splitlines())
    for executable in ("/usr/bin/roaming-homes", "/usr/bin/unison-fsmonitor",
                       "/usr/libexec/roaming-homes/logout"):
        assert modes[executable] == "-rwxr-xr-x", executable
    requires = {line.split()[0] for line in _run("rpm", "-qp", "--requires", rpm).splitlines()}
    assert {"unison", "openssh-clients", "python3", "python3-jeepney"} <= requires
    scripts = _run("rpm", "-qp", "--scripts", rpm)
    assert "systemctl --global enable roaming-homes.service" in scripts
    assert "systemctl --global disable roaming-homes.service" in scripts
    header = _run("rpm", "-qp", "--qf", "%{VERSION} %{ARCH}", rpm)
    assert header == f"{__version__} noarch"


def test_deb_file_list_conffiles_and_dependencies(packages: dict[str, Path],
                                                  tmp_path: Path) -> None:
    deb = str(packages["deb"])
    files = {line.split()[-1].lstrip(".") for line in _run("dpkg-deb", "-c", deb).splitlines()}
    assert files >= COMMON_FILES
    _assert_docs(files)
    assert {f"/usr/lib/python3/dist-packages/roaming_homes/{m}" for m in MODULES} <= files
    control = tmp_path / "control"
    _run("dpkg-deb", "-e", deb, str(control))
    assert set((control / "conffiles").read_text().split()) == {
        "/etc/roaming-homes/roaming-homes.toml", "/etc/profile.d/roaming-homes.sh"}
    fields = _run("dpkg-deb", "-f", deb, "Version", "Architecture", "Depends")
    assert f"Version: {__version__}" in fields and "Architecture: all" in fields
    depends = {d.strip().split()[0] for d in fields.split("Depends:", 1)[1].split(",")}
    assert {"unison", "openssh-client", "python3", "python3-jeepney"} <= depends
    assert "deb-systemd-helper --user enable 'roaming-homes.service'" in (
        control / "postinst").read_text()


@pytest.fixture(scope="module")
def installed_deb(packages: dict[str, Path],
                  tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The .deb installed with apt; purged (with what it pulled in) afterwards."""
    with _one_worker_at_a_time(tmp_path_factory, "install"):
        before = _installed_packages()
        if "roaming-homes" in before or Path("/etc/roaming-homes").exists():
            pytest.fail("roaming-homes is already installed or /etc/roaming-homes exists: this "
                        "test installs and purges the package; remove it first "
                        "(apt-get purge roaming-homes) or deselect with -m 'not packages'")
        try:
            _run(*APT, "install", "--no-install-recommends", str(packages["deb"]))
            yield
        finally:
            added = sorted(_installed_packages() - before)
            if added:
                _run(*APT, "purge", *added)


def _installed_env(setup: Setup) -> dict[str, str]:
    """The user's environment without the source tree: only the installed copy is found."""
    env = {k: v for k, v in setup.env.items() if k != "PYTHONPATH"}
    return {**env, "PATH": SYSTEM_PATH}


@pytest.fixture
def system_sshd(tmp_path: Path) -> Iterator[SshServer]:
    """A server whose sessions have the system's PATH: the installed unison-fsmonitor too."""
    with SshServer(tmp_path / "sshd", env={"PATH": SYSTEM_PATH}) as server:
        yield server


def test_installed_deb_syncs_and_passes_check_against_the_server(
        installed_deb: None, tmp_path: Path, system_sshd: SshServer) -> None:
    setup = Setup(tmp_path / "user", system_sshd)
    try:
        env = _installed_env(setup)

        def run(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(args, env=env, cwd=tmp_path, capture_output=True, text=True,
                                  timeout=120, check=False)

        version = run("/usr/bin/roaming-homes", "--version")
        assert version.returncode == 0 and __version__ in version.stdout, version
        where = run("/usr/bin/python3", "-c", "import roaming_homes; print(roaming_homes.__file__)")
        assert where.stdout.strip() == "/usr/lib/python3/dist-packages/roaming_homes/__init__.py"
        (setup.home / "Documents").mkdir()
        (setup.home / "Documents" / "from-laptop.txt").write_text("installed copy\n")
        sync = run("/usr/bin/roaming-homes", "sync")
        assert sync.returncode == 0, sync.stdout + sync.stderr
        arrived = setup.server_home / "Documents" / "from-laptop.txt"
        assert arrived.read_text() == "installed copy\n"
        result = run("/usr/bin/roaming-homes", "check", "--json")
        checks = {item["name"]: item for item in json.loads(result.stdout)["checks"]}
        assert result.returncode == 0, checks
        for name in ("config", "server reachable", "host key", "ssh login", "server home",
                     "unison", "replica markers", "last sync"):
            assert checks[name]["status"] == "ok", checks[name]
        # The package put unison-fsmonitor on the PATH, where real-time mode runs it.
        assert checks["fsmonitor"]["status"] == "ok", checks["fsmonitor"]
        assert "/usr/bin/unison-fsmonitor" in checks["fsmonitor"]["detail"]
    finally:
        setup.close()


def test_installed_deb_enables_the_user_unit_for_everyone(installed_deb: None) -> None:
    assert ENABLED_LINK.is_symlink()
    assert os.readlink(ENABLED_LINK) == "/usr/lib/systemd/user/roaming-homes.service"
    conffiles = _run("dpkg-query", "-W", "-f=${Conffiles}", "roaming-homes")
    assert "/etc/roaming-homes/roaming-homes.toml" in conffiles
    # The installed logout hook returns at once even without a configuration (detached sync).
    hook = subprocess.run(["/usr/libexec/roaming-homes/logout"], capture_output=True, text=True,
                          timeout=10, check=False, env={"PATH": SYSTEM_PATH})
    assert hook.returncode == 0 and hook.stdout == ""


def test_installed_unit_documents_itself_with_the_installed_man_pages(
        installed_deb: None) -> None:
    unit = Path("/usr/lib/systemd/user/roaming-homes.service").read_text()
    documentation = " ".join(line.split("=", 1)[1] for line in unit.splitlines()
                             if line.startswith("Documentation="))
    assert {"man:roaming-homes(1)", "man:roaming-homes.toml(5)"} <= set(documentation.split())
    for page in MAN_PAGES:
        (installed,) = [p for p in (Path(page), Path(f"{page}.gz")) if p.exists()]
        text = (gzip.decompress(installed.read_bytes()) if installed.suffix == ".gz"
                else installed.read_bytes()).decode()
        assert text.startswith('.TH "ROAMING-HOMES'), installed
    assert Path(README).read_text().startswith("# roaming-homes")
    if shutil.which("man", path=SYSTEM_PATH):  # man finds the pages the unit names
        for name, section in (("roaming-homes", "1"), ("roaming-homes.toml", "5")):
            where = _run("man", "-w", section, name).strip()
            assert where.startswith(f"/usr/share/man/man{section}/{name}.{section}"), where
