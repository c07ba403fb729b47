"""Start the project's real server processes for tests, on free ports.

Each server gets its own temporary SQLite database (unless told otherwise), is
migrated (and seeded) before it starts, announces the port it bound (port 0:
the kernel picks a free one, so parallel runs never collide) and is stopped by
whoever started it.
"""

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import redis
import requests

ROOT = Path(__file__).resolve().parent.parent
MANAGE = str(ROOT / "manage.py")
GUNICORN = str(Path(sys.executable).with_name("gunicorn"))


def server_env(database_path: Path, **overrides: str) -> dict[str, str]:
    """Return a clean environment for a server subprocess under test settings."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("AUTH_", "AUTHAPI_", "DJANGO_", "API_BASEURL", "DATABASE_URL"))
        and key != "REDIS_URL"
    }
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings.test",
        ENV_FILE=os.devnull,
        DATABASE_URL=f"sqlite:///{database_path}",
        PYTHONUNBUFFERED="1",
    )
    env.update(overrides)
    return env


def manage(*args: str, env: dict[str, str], timeout: float = 120) -> str:
    """Run a management command to completion; return its stdout."""
    result = subprocess.run(
        [sys.executable, MANAGE, *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{result.stderr[-3000:]}")
    return result.stdout


@dataclass
class ServerProcess:
    url: str
    process: subprocess.Popen
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def pause(self) -> None:
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.process.send_signal(signal.SIGCONT)


@dataclass
class AuthApiProcess(ServerProcess):
    env: dict[str, str] = field(default_factory=dict)

    def stats(self) -> dict[str, int]:
        response = requests.get(f"{self.url}/_stats", timeout=5)
        response.raise_for_status()
        return response.json()

    def faults(self) -> dict[str, float]:
        """Return the running API's faults (GET /_faults), e.g. {"refresh_delay": 0.0}."""
        response = requests.get(f"{self.url}/_faults", timeout=5)
        response.raise_for_status()
        return response.json()

    def set_faults(self, **values: float | None) -> dict[str, float]:
        """Set faults of the running API (POST /_faults); None restores the setting.

        `set_faults(refresh_delay=0.5)` stalls every later refresh half a second.
        """
        response = requests.post(f"{self.url}/_faults", json=values, timeout=5)
        response.raise_for_status()
        return response.json()

    def apiuser(self, *args: str) -> str:
        """Run `manage.py apiuser ARGS` on this API's database; return its output."""
        return manage("apiuser", *args, env=self.env)


@contextlib.contextmanager
def _serve(command: list[str], env: dict[str, str], log_path: Path, announce: str, cls):
    """Start `command`, wait for `announce` (a regex with a `port` group) in its log."""
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            command, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            match = re.search(announce, log_path.read_text(errors="replace"))
            if match:
                break
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{command[1:3]} did not start:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.05)
        yield cls(url=f"http://127.0.0.1:{match['port']}", process=process, log_path=log_path)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGCONT)
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@contextlib.contextmanager
def running_authapi(workdir: Path, *, port: int = 0, **env_overrides: str):
    """Migrate, seed and serve the reference API; yield an AuthApiProcess.

    Started again with the same `workdir` and `port`, it is the same API with
    the same tokens: a backend that went down and came back.
    """
    env = server_env(workdir / "authapi.sqlite3", AUTHAPI_EXPOSE_STATS="1", **env_overrides)
    manage("migrate", "--noinput", "-v", "0", env=env)
    manage("seed_demo_users", "--quiet", env=env)
    with _serve(
        [sys.executable, MANAGE, "runauthapi", f"127.0.0.1:{port}"],
        env,
        workdir / "authapi.log",
        r"listening on http://127\.0\.0\.1:(?P<port>\d+)/",
        AuthApiProcess,
    ) as server:
        server.env = env
        yield server


@contextlib.contextmanager
def running_app(
    workdir: Path,
    *,
    api_url: str,
    workers: int = 2,
    name: str = "app",
    database: str = "app",
    gunicorn_args: tuple[str, ...] = (),
    collectstatic: bool = False,
    **env_overrides: str,
):
    """Migrate and serve the web app under gunicorn; yield a ServerProcess.

    Servers given the same `database` name share one SQLite file (sessions);
    pass REDIS_URL to share the cache across them too.
    """
    env = server_env(workdir / f"{database}.sqlite3", API_BASEURL=api_url, **env_overrides)
    manage("migrate", "--noinput", "-v", "0", env=env)
    manage("createcachetable", env=env)
    if collectstatic:  # production settings serve hashed files from STATIC_ROOT
        env.setdefault("STATIC_ROOT", str(workdir / f"static-{name}"))
        manage("collectstatic", "--noinput", "-v", "0", env=env)
    with _serve(
        [
            GUNICORN,
            "config.wsgi",
            "--bind",
            "127.0.0.1:0",
            "--workers",
            str(workers),
            "--no-control-socket",
            "--graceful-timeout",
            "5",
            *gunicorn_args,
        ],
        env,
        workdir / f"{name}.log",
        r"Listening at: http://127\.0\.0\.1:(?P<port>\d+)",
        ServerProcess,
    ) as server:
        yield server


PG = "postgresql://postgres@127.0.0.1:5432"


def postgres_available() -> bool:
    try:
        with psycopg.connect(f"{PG}/test", connect_timeout=2):
            return True
    except psycopg.Error:
        return False


def redis_available() -> bool:
    try:
        return bool(redis.Redis(host="127.0.0.1", port=6379, socket_timeout=1).ping())
    except redis.RedisError:
        return False


@contextlib.contextmanager
def throwaway_database(prefix: str = "tokenauth"):
    """Create a PostgreSQL database for one run; yield its URL; drop it after."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(f"{PG}/test", autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{PG}/{name}"
    finally:
        with psycopg.connect(f"{PG}/test", autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def worker_pids(master_pid: int) -> list[int]:
    """Return the pids of a gunicorn master's workers."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == master_pid:
            pids.append(int(stat.parent.name))
    return pids


@contextlib.contextmanager
def shared_storage(mode: str, label: str):
    """Yield (description, env) for app servers: PostgreSQL + Redis, or SQLite.

    `mode` "auto" picks PostgreSQL and Redis when both run here (the
    production path), else SQLite and the database cache.
    """
    if mode == "auto":
        mode = "postgres" if postgres_available() and redis_available() else "sqlite"
    if mode == "sqlite":
        yield "SQLite + database cache", {}
        return
    with throwaway_database(f"tokenauth_{label}") as url:
        yield (
            "PostgreSQL + Redis",
            {
                "DATABASE_URL": url,
                "REDIS_URL": "redis://127.0.0.1:6379/0",
                "CACHE_KEY_PREFIX": f"{label}-{uuid.uuid4().hex[:8]}",
            },
        )
