"""Start the project's real server processes for tests, on free ports.

Each server gets its own temporary SQLite database, is migrated and seeded
before it starts, announces the port it bound (port 0: the kernel picks a free
one, so parallel runs never collide) and is stopped by whoever started it.
"""

import contextlib
import os
import select
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
MANAGE = str(ROOT / "manage.py")


def server_env(database_path: Path, **overrides: str) -> dict[str, str]:
    """Return a clean environment for a server subprocess under test settings."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("AUTH_", "AUTHAPI_", "DJANGO_", "API_BASEURL", "DATABASE_URL"))
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
class AuthApiProcess:
    url: str
    process: subprocess.Popen
    log_path: Path

    def stats(self) -> dict[str, int]:
        response = requests.get(f"{self.url}/_stats", timeout=5)
        response.raise_for_status()
        return response.json()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def pause(self) -> None:
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.process.send_signal(signal.SIGCONT)


def _read_announced_port(process: subprocess.Popen, log_path: Path, deadline: float) -> int:
    prefix = "Reference auth API listening on http://"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"runauthapi exited early:\n{log_path.read_text()[-3000:]}")
        ready, _, _ = select.select([process.stdout], [], [], 0.2)
        if ready:
            line = process.stdout.readline()
            if line.startswith(prefix):
                return int(line[len(prefix) :].rstrip("/\n").rsplit(":", 1)[1])
    raise RuntimeError(f"runauthapi did not start in time:\n{log_path.read_text()[-3000:]}")


@contextlib.contextmanager
def running_authapi(workdir: Path, **env_overrides: str):
    """Migrate, seed and serve the reference API; yield an AuthApiProcess."""
    env = server_env(workdir / "authapi.sqlite3", AUTHAPI_EXPOSE_STATS="1", **env_overrides)
    manage("migrate", "--noinput", "-v", "0", env=env)
    manage("seed_demo_users", "--quiet", env=env)
    log_path = workdir / "authapi.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [sys.executable, MANAGE, "runauthapi", "127.0.0.1:0"],
            env=env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
    try:
        port = _read_announced_port(process, log_path, time.monotonic() + 30)
        yield AuthApiProcess(url=f"http://127.0.0.1:{port}", process=process, log_path=log_path)
    finally:
        process.send_signal(signal.SIGCONT)
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        process.stdout.close()
