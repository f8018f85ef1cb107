"""A throw-away PostgreSQL server that the caller owns: initdb in a temporary directory, a free
TCP port on 127.0.0.1, trust authentication for a ``postgres`` superuser.

Outage tests and ``make chaos`` stop and restart *this* server, never one they did not start.
It needs only the server binaries (initdb, pg_ctl, postgres) and the standard library:

    with PrivateCluster() as cluster:       # initdb + start
        url = cluster.create_database("x")  # postgresql://postgres@127.0.0.1:<port>/x
        cluster.restart(down_for=3)         # the outage
    # stopped and deleted

PostgreSQL refuses to run as root. When this process is root, the binaries run as an
unprivileged OS user (``postgres`` if it exists, else ``nobody``; CONVEYOR_PG_OS_USER chooses
another) and the temporary directory is handed to that user. Otherwise they run as the
current user. CONVEYOR_PG_BINDIR names the directory of the binaries if the search below
does not find them.
"""

from __future__ import annotations

import glob
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

SUPERUSER = "postgres"
SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    "unix_socket_directories": "''",  # TCP only: nothing written outside the temporary directory
    "max_connections": "200",
    # a throw-away cluster need not survive an OS crash, but a server crash (stop("immediate"))
    # must lose no commit: WAL still reaches the OS at each commit (synchronous_commit stays on)
    "fsync": "off",
    "full_page_writes": "off",
    "logging_collector": "off",
}


class ClusterUnavailable(RuntimeError):
    """The server binaries are missing or the cluster could not be created or started."""


def find_bindir() -> Path:
    """The directory holding initdb, pg_ctl and postgres: CONVEYOR_PG_BINDIR, ``pg_config
    --bindir``, the newest /usr/lib/postgresql/N/bin (Debian, Ubuntu), /usr/pgsql-N/bin (RPM),
    then PATH."""
    candidates: list[str] = []
    if os.environ.get("CONVEYOR_PG_BINDIR"):
        candidates.append(os.environ["CONVEYOR_PG_BINDIR"])
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, timeout=10)
            candidates.append(out.stdout.strip())
        except (OSError, subprocess.SubprocessError):
            pass

    def version(path: str) -> tuple[int, ...]:
        return tuple(int(n) for n in re.findall(r"\d+", path)) or (0,)

    for pattern in ("/usr/lib/postgresql/*/bin", "/usr/pgsql-*/bin", "/usr/local/pgsql/bin"):
        candidates += sorted(glob.glob(pattern), key=version, reverse=True)
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(os.path.dirname(initdb))
    for directory in candidates:
        if directory and all(os.access(os.path.join(directory, b), os.X_OK)
                             for b in ("initdb", "pg_ctl", "postgres")):
            return Path(directory)
    raise ClusterUnavailable(
        "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found;"
        " install the server package or set CONVEYOR_PG_BINDIR")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_answers(port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout):
            return True
    except OSError:
        return False


class PrivateCluster:
    """A PostgreSQL cluster in a temporary directory, owned and controlled by its creator."""

    def __init__(self, *, bindir: str | Path | None = None, port: int | None = None,
                 os_user: str | None = None) -> None:
        self.bindir = Path(bindir) if bindir else find_bindir()
        self.port = port or free_port()
        self._run_as = self._unprivileged_user(os_user)
        self.base: Path | None = None
        self.running = False

    # --- where and as whom ---------------------------------------------------------------
    @staticmethod
    def _unprivileged_user(name: str | None) -> pwd.struct_passwd | None:
        """The OS user the server runs as when we are root; None means 'as ourselves'."""
        if os.geteuid() != 0:
            return None
        names = [name or os.environ.get("CONVEYOR_PG_OS_USER") or "", "postgres", "nobody"]
        for candidate in filter(None, names):
            try:
                return pwd.getpwnam(candidate)
            except KeyError:
                continue
        raise ClusterUnavailable("running as root and no 'postgres' or 'nobody' user to run"
                                 " PostgreSQL as; set CONVEYOR_PG_OS_USER")

    @property
    def datadir(self) -> Path:
        assert self.base is not None, "the cluster has not been created"
        return self.base / "data"

    @property
    def logfile(self) -> Path:
        assert self.base is not None, "the cluster has not been created"
        return self.base / "server.log"

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{dbname}"

    def _make_base(self) -> Path:
        """A fresh temporary directory the server's OS user can write (and reach)."""
        for parent in (None, "/tmp", "/var/tmp"):
            base = Path(tempfile.mkdtemp(prefix="conveyor-pg-", dir=parent))
            if self._run_as is None:
                return base
            os.chown(base, self._run_as.pw_uid, self._run_as.pw_gid)
            if self._run(["test", "-w", str(base), "-a", "-x", str(base)],
                         check=False).returncode == 0:
                return base
            shutil.rmtree(base, ignore_errors=True)  # a parent it cannot enter: try another
        raise ClusterUnavailable(f"no temporary directory that user {self._run_as.pw_name}"
                                 " can write")

    def _run(self, args: list[str], *, check: bool = True,
             timeout: float = 120) -> subprocess.CompletedProcess[str]:
        kwargs: dict[str, Any] = {}
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = env["LANG"] = "C"
        if self._run_as is not None:
            kwargs = {"user": self._run_as.pw_uid, "group": self._run_as.pw_gid,
                      "extra_groups": [], "umask": 0o077}
            env["HOME"] = str(self.base or "/tmp")
        result = subprocess.run(args, env=env, cwd=self.base or "/", capture_output=True,
                                text=True, timeout=timeout, **kwargs)
        if check and result.returncode != 0:
            raise ClusterUnavailable(
                f"{' '.join(args[:2])} failed ({result.returncode}):"
                f" {(result.stderr or result.stdout).strip()[-2000:]}{self._log_tail()}")
        return result

    def _log_tail(self) -> str:
        try:
            tail = self.logfile.read_text(errors="replace").strip().splitlines()[-15:]
        except (OSError, AssertionError):
            return ""
        return "\nserver log:\n" + "\n".join(tail) if tail else ""

    # --- life cycle ----------------------------------------------------------------------
    def create(self) -> None:
        """initdb into a new temporary directory (done by start() if not yet)."""
        if self.base is not None:
            return
        self.base = self._make_base()
        self._run([str(self.bindir / "initdb"), "-D", str(self.datadir), "-U", SUPERUSER,
                   "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync"])
        with (self.datadir / "postgresql.conf").open("a") as conf:
            conf.write("\n# conveyor's private test cluster\n")
            conf.writelines(f"{k} = {v}\n" for k, v in SETTINGS.items())

    def start(self, timeout: float = 60) -> PrivateCluster:
        """Start the server (initdb first if needed) and return once it accepts connections.
        If the port was taken meanwhile (only before the first start), another is chosen."""
        self.create()
        for attempt in range(3):
            result = self._pg_ctl("start", "-w", "-t", str(int(timeout)), "-l", str(self.logfile),
                                  "-o", f"-p {self.port}", check=False, timeout=timeout + 10)
            if result.returncode == 0:
                self.running = True
                return self
            if attempt < 2 and not self.started_once and port_answers(self.port):
                self.port = free_port()  # someone else listens there now
                continue
            break
        raise ClusterUnavailable(f"pg_ctl start failed on port {self.port}:"
                                 f" {result.stderr.strip()}{self._log_tail()}")

    @property
    def started_once(self) -> bool:
        return self.base is not None and (self.datadir / "postmaster.opts").exists()

    def stop(self, mode: str = "fast", timeout: float = 60) -> None:
        """Stop the server: ``fast`` (clients disconnected, clean shutdown) or ``immediate``
        (as if the server crashed)."""
        if self.base is None:
            return
        self._pg_ctl("stop", "-w", "-t", str(int(timeout)), "-m", mode,
                     check=False, timeout=timeout + 10)
        self.running = False

    def restart(self, down_for: float = 0.0, mode: str = "fast") -> None:
        """An outage: stop, stay down ``down_for`` seconds, start again on the same port."""
        self.stop(mode)
        time.sleep(down_for)
        self.start()

    def is_ready(self) -> bool:
        if self.base is None:
            return False
        pg_isready = self.bindir / "pg_isready"
        if pg_isready.exists():
            return self._run([str(pg_isready), "-q", "-h", "127.0.0.1", "-p", str(self.port)],
                             check=False, timeout=10).returncode == 0
        return port_answers(self.port)

    def ensure_running(self) -> None:
        """Start the server again if a caller left it stopped."""
        if not self.running or not self.is_ready():
            self.start()

    def destroy(self) -> None:
        """Stop the server and delete its directory."""
        if self.base is None:
            return
        self.stop("immediate")
        shutil.rmtree(self.base, ignore_errors=True)
        self.base = None

    def _pg_ctl(self, *args: str, check: bool = True,
                timeout: float = 70) -> subprocess.CompletedProcess[str]:
        return self._run([str(self.bindir / "pg_ctl"), "-D", str(self.datadir), *args],
                         check=check, timeout=timeout)

    # --- databases -----------------------------------------------------------------------
    def create_database(self, name: str) -> str:
        """CREATE DATABASE ``name`` (dropped first if it exists); return its URL."""
        import psycopg

        with psycopg.connect(self.url(), autocommit=True, connect_timeout=10) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop_database(self, name: str) -> None:
        import psycopg

        with psycopg.connect(self.url(), autocommit=True, connect_timeout=10) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def __enter__(self) -> PrivateCluster:
        try:
            return self.start()
        except BaseException:
            self.destroy()
            raise

    def __exit__(self, *exc: object) -> None:
        self.destroy()

    def __repr__(self) -> str:
        return f"PrivateCluster(port={self.port}, base={self.base}, running={self.running})"
