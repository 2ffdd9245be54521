"""A real PostgreSQL server in a directory of our own, run as an unprivileged user when we are root."""

from __future__ import annotations

import hashlib
import os
import pwd
import re
import shutil
import signal
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from deploy.devstack.process import ManagedProcess, StackError, ensure_port_free, port_is_open, run_checked
from deploy.devstack.system import ensure_apt_packages, ensure_system_user, is_root

HOST = "127.0.0.1"
SYSTEM_USER = "loyaltyfunnel"
SUPERUSER = "postgres"
SUPERUSER_PASSWORD = "postgres"  # loopback-only development server  # noqa: S105
DATABASE = "loyalty"
ROLE = "loyalty"
ROLE_PASSWORD = "loyalty"  # noqa: S105 - the documented development credentials
# The kernel limits a unix socket path to 107 bytes; past that we serve over TCP only.
_MAX_SOCKET_DIR = 90
# When the server's account cannot reach the checkout (a clone under root's 0700 home), its data and socket
# live in a directory of its own here instead: /var/tmp survives a reboot, unlike a tmpfs /tmp.
# Safe in a shared sticky directory: _private_home refuses a path that someone else created.
OUTSIDE_HOMES = Path("/var/tmp")  # noqa: S108
# Written next to the pidfile: where this run directory's server keeps its data, decided once.
_HOME_RECORD = "server-home"
_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def _bindir_candidates() -> list[Path]:
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
        reverse=True,
    )
    on_path = shutil.which("postgres")
    if on_path:
        found.append(Path(on_path).resolve().parent)
    return [p for p in found if (p / "postgres").is_file() and (p / "initdb").is_file()]


def ensure_postgres_binaries() -> Path:
    """The directory holding postgres/initdb/psql, installing Debian's postgresql package if missing."""
    candidates = _bindir_candidates()
    if not candidates:
        ensure_apt_packages(["postgresql"], why="the local stack runs a PostgreSQL server")
        candidates = _bindir_candidates()
    if not candidates:
        raise StackError("PostgreSQL was installed but no postgres/initdb binaries were found")
    return candidates[0]


@dataclass(frozen=True)
class PostgresServer:
    process: ManagedProcess
    port: int
    run_dir: Path
    bindir: Path

    @property
    def url(self) -> str:
        """SQLAlchemy URL of the application database, as DATABASE_URL expects it."""
        return self.database_url(DATABASE)

    def database_url(self, database: str) -> str:
        return f"postgresql+asyncpg://{ROLE}:{ROLE_PASSWORD}@{HOST}:{self.port}/{database}"

    def psql(self, sql: str, database: str = "postgres", **variables: str) -> str:
        """Run SQL as the superuser over TCP (works whoever we are, root included).

        variables are psql variables, quoted safely in the SQL as :'name' (literal) or :"name" (identifier).
        """
        env = {**os.environ, "PGPASSWORD": SUPERUSER_PASSWORD, "PGCONNECT_TIMEOUT": "5"}
        argv = [str(self.bindir / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-At"]
        argv += ["-h", HOST, "-p", str(self.port), "-U", SUPERUSER, "-d", database]
        for key, value in variables.items():
            argv += ["-v", f"{key}={value}"]
        argv += ["-f", "-"]
        return run_checked(argv, what="psql", env=env, input_text=sql, timeout=60)

    def create_database(self, name: str) -> str:
        """Create database `name` owned by the application role if absent; return its URL."""
        if not _NAME.match(name):
            raise ValueError(f"not a plain database name: {name!r}")
        self.psql(
            "SELECT format('CREATE DATABASE %I OWNER %I', :'db', :'role') "
            "WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'db')\\gexec\n",
            db=name,
            role=ROLE,
        )
        return self.database_url(name)

    def stop(self, timeout: float = 30.0) -> bool:
        return self.process.stop(timeout)


def postgres_process(run_dir: Path, log_file: Path | None = None) -> ManagedProcess:
    # SIGINT is PostgreSQL's "fast" shutdown: it disconnects clients instead of waiting for them.
    return ManagedProcess(
        "postgres", run_dir / "postgres.pid", log_file or run_dir / "postgres.log", stop_signal=signal.SIGINT
    )


def _owned_dir(path: Path, user: str | None) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o700)
    if user is not None:
        shutil.chown(path, user, user)
    return path


# How every cluster of ours is initialised, and docker compose's (tests/unit/test_compose.py): UTF-8, and the
# C locale, whose collation compares text byte by byte, in the order Python sorts the same strings in. The
# postgres image's default, en_US.utf8, follows the language's rules: on the benchmark's segmenter phase,
# PostgreSQL's CPU an event about 1.5x and pgbench's limit about half (bench/README.md, sixty-ninth round).
INITDB_LOCALE = ("--encoding=UTF8", "--locale=C")


def _initdb(bindir: Path, data: Path, run_dir: Path, user: str | None, fast: bool) -> None:
    pwfile = run_dir / "superuser.pw"
    pwfile.write_text(SUPERUSER_PASSWORD + "\n")
    if user is not None:
        shutil.chown(pwfile, user, user)
    argv = [str(bindir / "initdb"), "-D", str(data), "-U", SUPERUSER, f"--pwfile={pwfile}"]
    # Password (SCRAM) over TCP; trust only on the socket, which sits in a directory only we can enter.
    argv += ["--auth-host=scram-sha-256", "--auth-local=trust", *INITDB_LOCALE]
    if fast:
        argv.append("--no-sync")
    try:
        run_checked(argv, what="initdb", user=user, cwd=run_dir, timeout=300)
    finally:
        pwfile.unlink(missing_ok=True)


def _server_argv(bindir: Path, data: Path, socket_dir: Path | None, port: int, fast: bool) -> list[str]:
    settings = {
        "listen_addresses": HOST,
        "port": str(port),
        "unix_socket_directories": str(socket_dir) if socket_dir else "",
        "max_connections": "200",
        "log_min_messages": "warning",
    }
    if fast:
        # Only the throwaway test server: durability is traded for speed, a crash loses the data.
        settings |= {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}
    argv = [str(bindir / "postgres"), "-D", str(data)]
    for key, value in settings.items():
        argv += ["-c", f"{key}={value}"]
    return argv


def home_for(run_dir: Path, base: Path = OUTSIDE_HOMES) -> Path:
    """The directory outside the checkout for the server of run_dir: one per run directory, by its path."""
    digest = hashlib.sha256(str(run_dir.resolve()).encode()).hexdigest()[:16]
    return base / f"loyaltyfunnel-postgres-{digest}"


def choose_server_home(
    run_dir: Path, user: str | None, reachable: Callable[[Path, str], bool], base: Path = OUTSIDE_HOMES
) -> Path:
    """Where the data and socket of run_dir's server live: run_dir itself when the server's account can
    enter it (we are that account, or the path is open to it), else a directory of its own under base.

    The first answer is recorded in run_dir and kept, so a later chmod never moves a database away."""
    record = run_dir / _HOME_RECORD
    if record.is_file():
        return Path(record.read_text().strip())
    home = run_dir if user is None or reachable(run_dir, user) else home_for(run_dir, base)
    record.write_text(f"{home}\n")
    return home


def server_home(run_dir: Path) -> Path:
    """Where the server of run_dir keeps (or would keep) its data, for `status` and clean-ups."""
    record = run_dir.resolve() / _HOME_RECORD
    return Path(record.read_text().strip()) if record.is_file() else run_dir.resolve()


def remove_server_data(run_dir: Path) -> None:
    """Delete run_dir and the server's data wherever it lives (the server must be stopped)."""
    home = server_home(run_dir)
    if home != run_dir.resolve() and home.parent == OUTSIDE_HOMES:
        shutil.rmtree(home, ignore_errors=True)
    shutil.rmtree(run_dir, ignore_errors=True)


def _private_home(home: Path, user: str) -> Path:
    """home as a 0700 directory owned by user; refuses one that someone else made (/var/tmp is shared)."""
    account = pwd.getpwnam(user)
    try:
        home.mkdir(mode=0o700)
        os.chown(home, account.pw_uid, account.pw_gid)
    except FileExistsError:
        pass
    info = os.lstat(home)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != account.pw_uid:
        raise StackError(f"{home} exists but is not a directory owned by {user}: remove it and try again")
    home.chmod(0o700)
    return home


def start_postgres(
    run_dir: Path,
    port: int,
    *,
    log_file: Path | None = None,
    fast: bool = False,
    timeout: float = 60.0,
    die_with_parent: bool = False,
) -> PostgresServer:
    """Start (or find running) the server of run_dir, with database `loyalty` ready.

    Pidfile and log stay in run_dir; the data and socket go where the server's account can reach them
    (see choose_server_home). fast: fsync off and friends, for the test fixture's throwaway server only.
    """
    run_dir = run_dir.resolve()
    bindir = ensure_postgres_binaries()
    user = ensure_system_user(SYSTEM_USER) if is_root() else None
    run_dir.mkdir(parents=True, exist_ok=True)
    home = choose_server_home(run_dir, user, _reachable)
    if user is not None:
        if home == run_dir:
            # The server runs as `user`, which must be able to enter its directory.
            run_dir.chmod(0o755)
        else:
            _private_home(home, user)
    process = postgres_process(run_dir, log_file)
    server = PostgresServer(process, port, run_dir, bindir)
    data = home / "data"
    if process.is_running():
        running_port = _running_port(data)
        if running_port not in (None, port):
            raise StackError(
                f"the server of {run_dir} is already running, on port {running_port}, not {port}"
            )
    else:
        ensure_port_free(HOST, port, "postgres")
        _drop_zombie_lock(data)
        if not (data / "PG_VERSION").is_file():
            _owned_dir(data, user)
            _initdb(bindir, data, home, user, fast)
        socket_dir: Path | None = home / "socket"
        if socket_dir is not None and len(str(socket_dir)) <= _MAX_SOCKET_DIR:
            _owned_dir(socket_dir, user)
        else:
            socket_dir = None
        process.start(
            _server_argv(bindir, data, socket_dir, port, fast),
            cwd=home,
            user=user,
            die_with_parent=die_with_parent,
        )
    process.wait_for_port(HOST, port, timeout)
    # The port opens a moment before the server accepts logins ("the database system is starting up").
    process.wait_until(lambda: _accepts_logins(server), "the server accepted logins", timeout)
    _ensure_role_and_database(server)
    return server


def _reachable(path: Path, user: str) -> bool:
    """Whether `user` can enter path (every parent directory lets it through)."""
    try:
        run_checked(["test", "-x", str(path)], what="", user=user, timeout=10)
    except StackError:
        return False
    return True


def _drop_zombie_lock(data: Path) -> None:
    """Remove postmaster.pid when the postmaster it names was killed but not yet reaped by its parent.

    PostgreSQL refuses to start while that PID exists, and a zombie's does until its parent waits for it
    (after a SIGKILL, when the parent is a long-lived process that has not looked yet). A zombie holds no
    memory, files or sockets, so its lock protects nothing."""
    try:
        pid = int((data / "postmaster.pid").read_text().splitlines()[0])
        stat_line = Path(f"/proc/{pid}/stat").read_text()
    except (OSError, IndexError, ValueError):
        return
    if stat_line[stat_line.rfind(")") + 2 :].split()[0] == "Z":
        (data / "postmaster.pid").unlink(missing_ok=True)


def _running_port(data: Path) -> int | None:
    """The port in postmaster.pid (its fourth line), which the running server wrote."""
    try:
        lines = (data / "postmaster.pid").read_text().splitlines()
        return int(lines[3])
    except (OSError, IndexError, ValueError):
        return None


def _accepts_logins(server: PostgresServer) -> bool:
    if not port_is_open(HOST, server.port):
        return False
    try:
        server.psql("SELECT 1")
    except StackError:
        return False
    return True


def _ensure_role_and_database(server: PostgresServer) -> None:
    # psql does not interpolate variables inside a DO body, hence format() + \gexec.
    server.psql(
        "SELECT format('CREATE ROLE %I LOGIN CREATEDB PASSWORD %L', :'role', :'password') "
        "WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'role')\\gexec\n",
        role=ROLE,
        password=ROLE_PASSWORD,
    )
    server.create_database(DATABASE)
