"""Start the project's real server processes for tests, on free ports.

Each server gets its own temporary SQLite database (unless told otherwise), is
migrated (and seeded) before it starts, announces the port it bound (port 0:
the kernel picks a free one, so parallel runs never collide) and is stopped by
whoever started it.

A new SQLite database is a copy of a template this test process migrated (and
seeded) once, not a `manage.py migrate` of its own: each of those is a Django
start-up and every migration, about a second of CPU, and a run starts servers
by the hundred. A test that must name a port before anything listens on it (a
server started again on its old port, a port that refuses connections) takes
one from `reserve_port()`, never by binding port 0 and closing it: the kernel
hands such a port to the next socket that asks.
"""

import atexit
import contextlib
import fcntl
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
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


# --- Ports named before anything listens on them ------------------------------------

_PORT_LOCKS = Path(tempfile.gettempdir()) / "tokenauth-test-ports"
_held_ports: dict[int, int] = {}  # port -> the fd of its lock file, held until this process ends


def _reservable_ports() -> range:
    """Ports below the kernel's ephemeral range: never handed out for port 0 or a connect()."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    return range(max(1024, low - 10000), low)


def reserve_port() -> int:
    """Return a local port nothing listens on, kept for this test process until it ends.

    The kernel never picks it (it is outside the ephemeral range) and other
    test processes skip it (a lock file under /tmp/tokenauth-test-ports), so
    a server can be started on it later, stopped and started on it again, or
    nothing may listen there at all: a port that refuses connections.
    """
    _PORT_LOCKS.mkdir(exist_ok=True)
    candidates = list(_reservable_ports())
    random.shuffle(candidates)
    for port in candidates:
        fd = os.open(_PORT_LOCKS / str(port), os.O_CREAT | os.O_RDWR, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            with socket.socket() as probe:  # something outside the tests may have it
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                probe.bind(("127.0.0.1", port))
        except OSError:
            os.close(fd)
            continue
        _held_ports[port] = fd
        return port
    raise RuntimeError(f"no free port in {_reservable_ports()}")


# --- Databases: copies of one migrated template per test process -----------------------

_TEMPLATES_DIR = Path(tempfile.mkdtemp(prefix="tokenauth-templates-"))
atexit.register(shutil.rmtree, _TEMPLATES_DIR, ignore_errors=True)
_templates: dict[tuple[bool, bool], Path] = {}
_templates_lock = threading.RLock()
# PostgreSQL databases that throwaway_database(migrated=True) made from a migrated template.
_migrated_urls: set[str] = set()
# (DATABASE_URL, seeded) of the SQLite files copied from a template.
_prepared: set[tuple[str, bool]] = set()


def _sqlite_template(*, authapi: bool, seed: bool) -> Path:
    """Return this process's SQLite file migrated (and seeded) under the test settings.

    `authapi`: AUTHAPI_ENABLED, which adds the reference API's tables.
    """
    with _templates_lock:
        if (authapi, seed) not in _templates:
            path = _TEMPLATES_DIR / f"authapi{int(authapi)}-seeded{int(seed)}.sqlite3"
            env = server_env(path, AUTHAPI_ENABLED="1" if authapi else "0")
            if seed:  # the seeded one starts as a copy of the migrated one
                shutil.copyfile(_sqlite_template(authapi=authapi, seed=False), path)
                manage("seed_demo_users", "--quiet", env=env)
            else:
                manage("migrate", "--noinput", "-v", "0", env=env)
            _templates[(authapi, seed)] = path
        return _templates[(authapi, seed)]


def prepare_database(env: dict[str, str], *, seed: bool = False) -> None:
    """Migrate (and seed) the database a server with `env` will use.

    A new SQLite file under the test settings is a copy of the template; one
    prepared so before (a server started again, a second server on it) is left
    as it is: the same API with the same tokens and accounts. Other databases
    and settings are migrated (and seeded) in place.
    """
    url = env["DATABASE_URL"]
    if (url, seed) in _prepared:
        return
    path = Path(url.removeprefix("sqlite:///")) if url.startswith("sqlite:///") else None
    fresh = path is not None and not path.exists()
    if fresh and env.get("DJANGO_SETTINGS_MODULE") == "config.settings.test":
        # AUTHAPI_ENABLED defaults to on under the test settings (config/settings/dev.py).
        authapi = env.get("AUTHAPI_ENABLED", "1").lower() in {"1", "true", "yes", "on", "y"}
        template = _sqlite_template(authapi=authapi, seed=seed)
        shutil.copyfile(template, path)
        _prepared.add((url, seed))
        return
    if url not in _migrated_urls:
        manage("migrate", "--noinput", "-v", "0", env=env)
    if seed:
        manage("seed_demo_users", "--quiet", env=env)


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
def _serve(
    command: list[str],
    env: dict[str, str],
    log_path: Path,
    announce: str,
    cls,
    *,
    stop_signal: signal.Signals = signal.SIGTERM,
    cwd: Path = ROOT,
):
    """Start `command` in `cwd`, wait for `announce` (a regex with a `port` group) in its log.

    It is stopped with `stop_signal` to its whole process group, then SIGKILL
    if it is still running 15 s later.
    """
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            command, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
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
            os.killpg(process.pid, stop_signal)
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
    env = server_env(
        workdir / "authapi.sqlite3", AUTHAPI_EXPOSE_STATS="1", AUTHAPI_ENABLED="1", **env_overrides
    )
    prepare_database(env, seed=True)
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
    prepare_database(env)  # creates the cache table too
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
        # Quick shutdown: SIGTERM's graceful one lets each idle worker sit out its
        # poll (about a second per server); a test's requests have all been answered.
        stop_signal=signal.SIGQUIT,
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


_postgres_templates: list[str] = []


def _drop_database(name: str) -> None:
    with psycopg.connect(f"{PG}/test", autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _postgres_template() -> str:
    """Return the name of this process's PostgreSQL database migrated under the test settings.

    Call with `_templates_lock` held: PostgreSQL copies a template only while
    nobody else is connected to it, so copies are made one at a time.
    """
    if not _postgres_templates:
        name = f"tokenauth_template_{os.getpid()}_{uuid.uuid4().hex[:6]}"
        with psycopg.connect(f"{PG}/test", autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
        atexit.register(_drop_database, name)
        env = server_env(_TEMPLATES_DIR / "unused.sqlite3", DATABASE_URL=f"{PG}/{name}")
        manage("migrate", "--noinput", "-v", "0", env=env)
        _postgres_templates.append(name)
    return _postgres_templates[0]


@contextlib.contextmanager
def throwaway_database(prefix: str = "tokenauth", *, migrated: bool = False):
    """Create a PostgreSQL database for one run; yield its URL; drop it after.

    `migrated=True` makes it a copy of a template migrated once per test
    process; servers started on it skip `migrate`.
    """
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    url = f"{PG}/{name}"
    with contextlib.ExitStack() as lock:
        template = ""
        if migrated:
            lock.enter_context(_templates_lock)
            template = f' TEMPLATE "{_postgres_template()}"'
        with psycopg.connect(f"{PG}/test", autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{name}"{template}')
    if migrated:
        _migrated_urls.add(url)
    try:
        yield url
    finally:
        _migrated_urls.discard(url)
        _drop_database(name)


def worker_pids(master_pid: int, *, at_least: int = 1, timeout: float = 10.0) -> list[int]:
    """Return the pids of a gunicorn master's workers, waiting for `at_least` of them.

    The master says "Listening at" before it forks its workers.
    """
    deadline = time.monotonic() + timeout
    while True:
        pids = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == master_pid:
                pids.append(int(stat.parent.name))
        if len(pids) >= at_least or time.monotonic() > deadline:
            return pids
        time.sleep(0.05)


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
    with throwaway_database(f"tokenauth_{label}", migrated=True) as url:
        yield (
            "PostgreSQL + Redis",
            {
                "DATABASE_URL": url,
                "REDIS_URL": "redis://127.0.0.1:6379/0",
                "CACHE_KEY_PREFIX": f"{label}-{uuid.uuid4().hex[:8]}",
            },
        )


# --- Waiting on what the servers report (tests/test_invariants.py, test_stress.py) ---


def wait_for_log(
    server: ServerProcess, pattern: str, *, count: int = 1, timeout: float = 30
) -> int:
    """Wait until `pattern` (a regex) occurs `count` times in the server's log; return the count."""
    deadline = time.monotonic() + timeout
    while True:
        found = len(re.findall(pattern, server.log()))
        if found >= count:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"{pattern!r} logged {found} times, expected {count}")
        time.sleep(0.1)


def wait_for_refreshes(api: AuthApiProcess, total: int, *, timeout: float = 60) -> dict[str, int]:
    """Wait until the API has answered `total` refreshes in all (ok or refused); return stats."""
    deadline = time.monotonic() + timeout
    while True:
        stats = api.stats()
        if stats["refresh"] + stats["refresh_rejected"] >= total:
            return stats
        if time.monotonic() > deadline:
            raise AssertionError(f"the API answered fewer than {total} refreshes: {stats}")
        time.sleep(0.1)


def wait_for_quiet(api: AuthApiProcess, *, quiet_for: float = 1.5, timeout: float = 120):
    """Wait until no refresh has been in flight at the API for `quiet_for` seconds; return stats.

    In flight: counted in `refresh_calls` (on arrival) but not yet in `refresh`
    or `refresh_rejected` (on answer). A call queued in an app's pool arrives
    within moments of the one before it finishing, so a quiet spell longer
    than that means every queued call has been made and answered.
    """
    deadline = time.monotonic() + timeout
    quiet_since = None
    while True:
        stats = api.stats()
        busy = stats["refresh_calls"] > stats["refresh"] + stats["refresh_rejected"]
        now = time.monotonic()
        if busy:
            quiet_since = None
        elif quiet_since is None:
            quiet_since = now
        elif now - quiet_since >= quiet_for:
            return stats
        if now > deadline:
            raise AssertionError(f"the API did not go quiet within {timeout}s: {stats}")
        time.sleep(0.1)


class SlowCloseProxy:
    """A TCP proxy in front of a server that passes the server's close on `close_delay` s late.

    A server closes a connection a moment after its last answer (at once, or
    when its threads get round to it under load); a client that takes the
    connection from its pool within that moment sends its next request into
    a closing socket. This widens the moment to `close_delay` seconds so the
    race can be met on purpose. Use as a context manager; `url` is its address.
    """

    def __init__(self, upstream_url: str, *, close_delay: float):
        import threading
        from urllib.parse import urlsplit

        parts = urlsplit(upstream_url)
        self._upstream = (parts.hostname, parts.port)
        self._delay = close_delay
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._threading = threading
        self._closed = threading.Event()

    def __enter__(self) -> "SlowCloseProxy":
        self._threading.Thread(target=self._accept, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._closed.set()
        self._listener.close()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self._upstream, timeout=10)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            self._threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()
            self._threading.Thread(
                target=self._pump_back, args=(upstream, client), daemon=True
            ).start()

    @staticmethod
    def _pump(source, sink) -> None:
        """Client to server; what arrives after the server closed is dropped."""
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def _pump_back(self, source, sink) -> None:
        """Server to client; the server's close reaches the client `close_delay` s late."""
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        time.sleep(self._delay)
        for sock in (sink, source):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # wakes the other pump; close() alone would not
            with contextlib.suppress(OSError):
                sock.close()
