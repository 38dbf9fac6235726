"""Real servers for tests and benches: ``prefect server start`` on a free port, and a throwaway PostgreSQL.

A Prefect server on SQLite (``prefect_test_harness``'s, and ``prefect server start``'s default)
answers 503 to concurrent writes ("database is locked": a deferred transaction upgraded to a write
while another writes) and its client waits 2, 4, 8 s before trying again, so a fleet of runs
starting together is spread over seconds by the database. A production server runs on
PostgreSQL (``PREFECT_API_DATABASE_CONNECTION_URL``), which takes them at once:
``PostgresServer`` gives ``bench/fleet.py`` one, from Debian's ``postgresql`` package.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

PREFECT = str(Path(sys.executable).with_name("prefect"))


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now.

    Example:
        >>> 0 < free_port() < 65536
        True
    """
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_closed(port: int, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) != 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"port {port} still open {seconds:g} s after its server stopped")


class PrefectServer:
    """``prefect server start`` on 127.0.0.1 with its own PREFECT_HOME and leases on disk (they survive a
    restart); it can be stopped and started again on the same port and database.

    Args:
        home: Its PREFECT_HOME (the SQLite database, unless ``database_url`` is given).
        port: Its port (default: a free one).
        database_url: ``PREFECT_API_DATABASE_CONNECTION_URL``, e.g. ``PostgresServer.url``.
    """

    def __init__(self, home: Path, port: int | None = None, database_url: str | None = None):
        self.home, self.port, self.database_url = home, port or free_port(), database_url
        self.url = f"http://127.0.0.1:{self.port}/api"
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 120) -> None:
        """Starts it and waits until ``/api/health`` answers."""
        env = {
            **os.environ, "PREFECT_HOME": str(self.home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_UI_ENABLED": "false",
            "PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE": "prefect.server.concurrency.lease_storage.filesystem",
        }
        if self.database_url:
            env["PREFECT_API_DATABASE_CONNECTION_URL"] = self.database_url
        env.pop("PREFECT_API_URL", None)
        self.process = subprocess.Popen(
            [PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(self.port)],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"prefect server start did not answer within {timeout:g} s")

    def stop(self) -> None:
        """SIGTERM, then waits until the process is gone and the port is closed."""
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
        _wait_closed(self.port, 30)


class PostgresServer:
    """A throwaway PostgreSQL cluster in a temporary folder, on a free port of 127.0.0.1, trust authentication.

    Needs Debian's ``postgresql`` (``initdb`` and ``pg_ctl`` on the PATH or in
    ``/usr/lib/postgresql/*/bin``); as root it runs as the ``postgres`` user, which PostgreSQL requires
    (its folder is then made theirs).
    """

    DATABASE = "prefect"

    def __init__(self):
        self.folder, self.port = Path(tempfile.mkdtemp(prefix="postgres-")), free_port()
        self.url = f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/{self.DATABASE}"

    @staticmethod
    def available() -> bool:
        """Whether PostgreSQL's server programs are on this machine."""
        return _pg_program("initdb") is not None

    def _run(self, *command: str) -> None:
        as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        done = subprocess.run([*as_postgres, *command], capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"{Path(command[0]).name} failed: {done.stderr.strip()[-500:]}")

    def start(self) -> None:
        """Creates the cluster and its ``prefect`` database, and starts the server."""
        initdb, pg_ctl, createdb = (_pg_program(name) for name in ("initdb", "pg_ctl", "createdb"))
        if initdb is None or pg_ctl is None or createdb is None:
            raise RuntimeError("PostgreSQL is not installed: `apt-get install -y postgresql` installs it")
        if os.geteuid() == 0:
            shutil.chown(self.folder, "postgres", "postgres")
        data = str(self.folder / "data")
        self._run(initdb, "-D", data, "-U", "postgres", "-A", "trust", "--no-sync")
        self._run(pg_ctl, "-D", data, "-l", str(self.folder / "server.log"), "-w", "-o",
                  f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200",
                  "start")
        self._run(createdb, "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", self.DATABASE)

    def stop(self) -> None:
        """Stops the server and removes the cluster."""
        pg_ctl = _pg_program("pg_ctl")
        if pg_ctl and (self.folder / "data" / "postmaster.pid").exists():
            self._run(pg_ctl, "-D", str(self.folder / "data"), "-m", "fast", "-w", "stop")
        shutil.rmtree(self.folder, ignore_errors=True)


def _pg_program(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    versions = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
    return str(versions[-1]) if versions else None
