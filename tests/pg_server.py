"""A throwaway PostgreSQL server for the tests and the scale-out bench (import as
``from pg_server import ...``): Debian's server binaries (package ``postgresql``, installed by
``./scripts/setup --test``), a temporary data directory, a loopback port, and an unprivileged
user, since ``initdb`` refuses to run as root.

The cluster runs with ``fsync=off``: the tests stop and restart it cleanly (``pg_ctl`` fast
mode checkpoints), they never crash the machine under it, and every commit is still a commit.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import urllib.parse
from pathlib import Path
from typing import Iterator, Sequence

import pytest

OS_USER = "callpipe-test"
"""The system user the server runs as when the tests run as root (created when missing)."""
ROLE = "callpipe"
"""The database superuser initdb creates; loopback connections are trusted."""
DATABASE = "callpipe"
START_TIMEOUT_SECONDS = 60


def find_bindir() -> Path | None:
    """The newest installed server's bin directory (Debian keeps initdb off the PATH)."""
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parent.parent.name))
    if candidates:
        return Path(candidates[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).resolve().parent if initdb else None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class PostgresServer:
    """One ``postgres`` process on 127.0.0.1 with its data in a temporary directory."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="callpipe-pg-"))
        self.data = self.root / "data"
        self.log_path = self.root / "server.log"
        self.port = free_port()
        self._as_user: list[str] = []
        if os.geteuid() == 0:
            _ensure_os_user(OS_USER)
            os.chown(self.root, pwd.getpwnam(OS_USER).pw_uid, pwd.getpwnam(OS_USER).pw_gid)
            self._as_user = ["runuser", "-u", OS_USER, "--"]

    def _run(self, *command: str) -> None:
        argv = [*self._as_user, str(self.bindir / command[0]), *command[1:]]
        result = subprocess.run(argv, capture_output=True, text=True, timeout=START_TIMEOUT_SECONDS * 2)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed ({result.returncode}):\n{result.stdout}{result.stderr}\n{self.log()}")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def start(self) -> None:
        if not (self.data / "PG_VERSION").exists():
            self._run("initdb", "-D", str(self.data), "-U", ROLE, "--auth=trust", "--encoding=UTF8", "--no-sync", "--no-instructions")
        self._pg_ctl("start")
        self.create_database(DATABASE)

    def _pg_ctl(self, action: str, *extra: str) -> None:
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.root} "
            "-c fsync=off -c max_connections=300"
        )
        self._run("pg_ctl", action, "-D", str(self.data), "-l", str(self.log_path), "-w",
                  "-t", str(START_TIMEOUT_SECONDS), "-o", options, *extra)

    def restart(self) -> None:
        """Stop (fast: open sessions are cut, as in a real restart) and start again."""
        self._pg_ctl("restart", "-m", "fast")

    def halt(self) -> None:
        """Stop the server and keep its data (fast: open sessions are cut with an administrator's
        shutdown, new ones are refused), for an outage that lasts until :meth:`start`."""
        self._run("pg_ctl", "stop", "-D", str(self.data), "-m", "fast", "-w", "-t", str(START_TIMEOUT_SECONDS))

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._run("pg_ctl", "stop", "-D", str(self.data), "-m", "immediate", "-w")
        shutil.rmtree(self.root, ignore_errors=True)

    def dsn(self, database: str = DATABASE, schema: str | None = None) -> str:
        """A ``postgresql://`` URL; with ``schema``, every connection works in that schema."""
        url = f"postgresql://{ROLE}@127.0.0.1:{self.port}/{database}"
        if schema:
            url += "?options=" + urllib.parse.quote(f"-c search_path={schema}", safe="")
        return url

    def sql(self, statements: Sequence[str], database: str = "postgres") -> list[tuple[object, ...]]:
        """Run statements in autocommit mode; return the last one's rows."""
        import psycopg

        rows: list[tuple[object, ...]] = []
        with psycopg.connect(self.dsn(database), autocommit=True) as connection:
            for statement in statements:
                cursor = connection.execute(statement)  # type: ignore[call-overload]
                rows = cursor.fetchall() if cursor.description else []
        return rows

    def create_database(self, name: str) -> str:
        if not self.sql([f"SELECT 1 FROM pg_database WHERE datname = '{name}'"]):
            self.sql([f'CREATE DATABASE "{name}"'])
        return self.dsn(name)

    def fresh_database(self) -> str:
        """A new empty database's URL (for tests that run whole processes against it)."""
        return self.create_database("t_" + secrets.token_hex(6))

    def fresh_schema(self) -> tuple[str, str]:
        """A new empty schema in the main database: (its name, a URL working in it)."""
        schema = "t_" + secrets.token_hex(6)
        self.sql([f"CREATE SCHEMA {schema}"], DATABASE)
        return schema, self.dsn(DATABASE, schema)

    def drop_schema(self, schema: str) -> None:
        self.sql([f"DROP SCHEMA IF EXISTS {schema} CASCADE"], DATABASE)


def _ensure_os_user(name: str) -> None:
    try:
        pwd.getpwnam(name)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", name],
            check=True,
            capture_output=True,
        )


@contextlib.contextmanager
def running_server() -> Iterator[PostgresServer]:
    """A real PostgreSQL server of its own while the block runs, stopped and deleted after it."""
    bindir = find_bindir()
    if bindir is None:
        pytest.fail("the PostgreSQL server (Debian package postgresql) is missing: run ./scripts/test")
    server = PostgresServer(bindir)
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A real PostgreSQL server for the whole session, stopped and deleted at the end."""
    with running_server() as server:
        yield server


ENDINGS_AUDIT = """
CREATE TABLE endings (job_id TEXT NOT NULL, status TEXT NOT NULL);
CREATE FUNCTION log_ending() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO endings (job_id, status) VALUES (NEW.id, NEW.status);
    RETURN NEW;
END $$;
CREATE TRIGGER log_ending AFTER UPDATE OF status ON jobs FOR EACH ROW
    WHEN (NEW.status IN ('done', 'failed') AND OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION log_ending();
"""
"""Test-only: every time a job enters done or failed, in the same transaction as the change."""
