"""The benchmark of SPEC §5, in one run on one machine (see bench/README.md).

    python bench/run.py            (or: make bench)

(a) the dashboard without the token middleware, (b) the same dashboard with it
and a valid access token: throughput ratio b/a and backend calls per request;
(c) 50 concurrent requests sharing one expired access token: refresh calls;
(d) /api/users/me through the proxy vs the reference API directly: added
median and p99 latency, and where the proxy's time goes (bench/proxy_breakdown.py;
`--only proxy` runs (d) alone); (e) a refresh's own app CPU and its backend
calls, with roles from /users/me and from the access token (AUTH_ROLES_FROM=me
and =token; `--only refresh-cpu`); (f) the warm path of (b) with AUTH_METRICS
on vs off: throughput ratio of two servers a side (and each server over its
twin, the noise of telling servers apart), and the metrics-on server's /metrics
checked after its rounds; (g) a warm dashboard with each session store SESSION_ENGINE may
name (accounts.sessions, the ORM's; accounts.sessions_raw, hand-written SQL):
requests/s, app CPU and queries per request (`--only sessions`). Every
measurement but (a) runs in both token storage modes
(AUTH_TOKEN_STORAGE=cookies and =session; `--token-storage` picks one), each
bar applies to each mode. (d) and (e) are figures without a bar: SPEC §5
retired "proxy ≤ 2 ms" and "refresh ≤ 2 ms of app CPU".
Load comes from wrk (Debian's package). Prints the figures of both modes side
by side and writes bench/results/bench.json.
"""

import argparse
import contextlib
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import seed, sizing
from tests.flows import ADMIN, burst, sign_in_as, wait_until_access_expired
from tests.servers import (
    GUNICORN,
    ServerProcess,
    _serve,
    running_app,
    running_authapi,
    server_env,
    shared_storage,
    worker_pids,
)

UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def ensure_wrk() -> str:
    path = shutil.which("wrk")
    if path:
        return path
    if os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(["apt-get", "update", "-qq"], check=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True)
        return shutil.which("wrk")
    sys.exit("bench/run.py needs wrk: sudo apt-get install wrk")


def wrk(url: str, cookie: str, *, seconds: float, connections: int, threads: int) -> dict:
    """Run wrk once; return requests/s, latency percentiles (ms) and non-2xx count."""
    out = subprocess.run(
        [
            ensure_wrk(),
            f"-t{threads}",
            f"-c{connections}",
            f"-d{seconds:g}s",
            "--latency",
            "-H",
            f"Cookie: {cookie}",
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    latency = {
        int(p): float(v) * UNITS[u]
        for p, v, u in re.findall(r"^\s+(50|75|90|99)%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
    }
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1]),
        "requests": int(re.search(r"(\d+) requests in", out)[1]),
        "p50_ms": latency[50],
        "p99_ms": latency[99],
        "non_2xx": int(errors[1]) if errors else 0,
    }


def cookie_header(browser) -> str:
    """Return the Cookie header of the browser's session and token cookies (those it has)."""
    return "; ".join(
        f"{n}={browser.cookies.get(n)}" for n in TOKEN_COOKIES if browser.cookies.get(n)
    )


def backend_calls(stats: dict) -> int:
    return sum(stats[k] for k in ("login", "refresh", "logout", "me", "me_rejected"))


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
TOKEN_COOKIES = ("sessionid", "access_token", "refresh_token")
# AUTH_TOKEN_STORAGE: tokens relayed as cookies, or sealed in the server-side session.
COOKIES, SESSION = "cookies", "session"
MODES = (COOKIES, SESSION)
# (c)'s API issues access tokens this short (seconds).
SHORT_ACCESS_TTL = 8
# (e) in session mode: the API's access lifetime (seconds, its `access_ttl`
# fault) while the sessions that will refresh sign in. The app's sign-in
# reads /users/me with the new token, so it must outlive that call.
EXPIRING_ACCESS_TTL = 2
# Every app server of the benchmark: its settings and a fixed secret.
BENCH_ENV = {"DJANGO_SETTINGS_MODULE": "config.settings.bench", "SECRET_KEY": "b" * 60}
# gunicorn.conf.py's default worker count, passed to the servers of (h) and (i) that
# run as the project ships (tests/servers.py's running_app always names a count).
SHIPPED_WORKERS = (os.cpu_count() or 1) + 1
# (e) AUTH_ROLES_FROM: roles re-read from /users/me after each refresh, or read
# from the new access token's `roles` claim (the reference API's tokens carry it).
ROLES_FROM = ("me", "token")


def sign_in_mode(base_url: str, storage: str):
    """Sign in as the demo admin on a server of `storage` mode; return the jar (checked for it)."""
    return sign_in_as(base_url, ADMIN, storage=storage)


def wait_until_expired(browser, *, storage: str, signed_in_by: float, ttl: float) -> None:
    """Sleep until the browser's access token has expired.

    In cookie mode its JWT `exp` says when. In session mode the browser holds
    no token: the API wrote `exp` as a whole second at most `ttl` after the
    sign-in ended (`signed_in_by`, epoch seconds).
    """
    if storage == COOKIES:
        wait_until_access_expired(browser)
    else:
        time.sleep(max(0.0, signed_in_by + ttl - time.time()) + 0.5)


def api_access_token(api) -> str:
    """Sign in at the API itself; return its access token (for (d)'s direct arm).

    In session mode the browser holds no token to borrow; the API answers
    /users/me the same for any valid token of the same user.
    """
    response = requests.post(
        f"{api.url}/auth/login",
        json={"email": ADMIN.email, "password": ADMIN.password},
        timeout=10,
    )
    response.raise_for_status()
    return response.cookies["access_token"]


def process_cpu_seconds(pid: int) -> tuple[float, float]:
    """Return a process's (user, system) CPU time, every thread included (dead ones too)."""
    # proc(5): after the command's closing parenthesis, field 3 (state) is index 0,
    # so utime (field 14) and stime (field 15) are indices 11 and 12.
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) / CLOCK_TICKS, int(fields[12]) / CLOCK_TICKS


class RefreshArm:
    """(e) One app server of one AUTH_ROLES_FROM: its sync worker, warm pages, pages that refresh.

    A page that refreshes: in cookie mode the browser sends no access cookie
    (it let it expire); in session mode, where the browser holds no token,
    each is the first page of a session of its own whose access token has
    expired (signed in by `sign_in_expiring` while the API issued
    EXPIRING_ACCESS_TTL-second tokens, outside the measured batches).
    """

    def __init__(self, app, *, storage: str, roles_from: str):
        (self.worker,) = worker_pids(app.process.pid)
        self.url, self.storage, self.roles_from = app.url, storage, roles_from
        browser = sign_in_mode(app.url, storage)
        self.jar = {
            name: browser.cookies.get(name) for name in TOKEN_COOKIES if browser.cookies.get(name)
        }
        # A call that needs the token: the middleware only starts a refresh, and the first
        # backend call waits for it (a page that makes none is served at once and its
        # response may go out before the new pair: issue 21). Both batches make the same
        # proxied /users/me call, so the difference between them is the refresh.
        self.page = f"{app.url}/api/users/me"
        self.http = requests.Session()
        self.expired: list[dict] = []  # session mode: jars of sessions whose token has expired

    def get(self, cookies: dict) -> requests.Response:
        self.http.cookies.clear()  # the Cookie header goes exactly as given
        header = "; ".join(f"{k}={v}" for k, v in cookies.items())
        response = self.http.get(
            self.page, headers={"Cookie": header}, allow_redirects=False, timeout=30
        )
        if response.status_code != 200:
            raise RuntimeError(
                f"(e) {self.storage}, AUTH_ROLES_FROM={self.roles_from}: "
                f"{self.page} answered {response.status_code}"
            )
        return response

    def warm(self) -> None:
        if self.get(self.jar).cookies.get("refresh_token"):
            raise RuntimeError(f"(e) AUTH_ROLES_FROM={self.roles_from}: a warm call refreshed")

    def refreshed(self) -> None:
        if self.storage == SESSION:
            self.get(self.expired.pop())  # the API's counters show it refreshed (checked per batch)
            return
        response = self.get({k: v for k, v in self.jar.items() if k != "access_token"})
        for name in TOKEN_COOKIES:
            if response.cookies.get(name):
                self.jar[name] = response.cookies.get(name)
        if not response.cookies.get("access_token"):
            raise RuntimeError(
                f"(e) AUTH_ROLES_FROM={self.roles_from}: "
                "a call without its access cookie did not refresh"
            )

    def sign_in_expiring(self) -> None:
        self.expired.append(
            {"sessionid": sign_in_mode(self.url, self.storage).cookies["sessionid"]}
        )


def refresh_cpu(
    work: Path, common: dict, *, storage: str, per_round: int, rounds: int
) -> dict[str, dict]:
    """(e) The app's own CPU and backend calls per refresh, for each AUTH_ROLES_FROM.

    One app server per AUTH_ROLES_FROM (`me`: the refresh re-reads
    /users/me; `token`: the roles come from the new access token, no
    /users/me call), each with one sync worker, side by side against one
    reference API. N warm proxied `/api/users/me` calls (valid access token:
    no refresh) and N that refresh first (the middleware starts the refresh
    before the view; the proxied call waits for it) on each server; each
    request's own proxied `/users/me` is taken off the API's counts, the four batches in ABBA order
    each round (me warm, me refreshed, token warm, token refreshed, then the
    reverse); each worker's utime + stime from /proc before and after its
    batches, and the API's counters (/_stats) around each. The refresh pool
    and the keeper are threads of the same worker, so they are counted; the
    reference API runs in its own process and is not. Returns the figures
    keyed by AUTH_ROLES_FROM.
    """
    (work / f"api-refresh-{storage}").mkdir(exist_ok=True)
    with contextlib.ExitStack() as servers:
        api = servers.enter_context(running_authapi(work / f"api-refresh-{storage}"))
        arms = {
            roles_from: RefreshArm(
                servers.enter_context(
                    running_app(
                        work,
                        api_url=api.url,
                        workers=1,
                        name=f"refresh-cpu-{storage}-{roles_from}",
                        database="refresh-cpu",
                        AUTH_ROLES_FROM=roles_from,
                        **common,
                    )
                ),
                storage=storage,
                roles_from=roles_from,
            )
            for roles_from in ROLES_FROM
        }

        def prepare(count: int) -> None:
            if storage == COOKIES:
                return
            api.set_faults(access_ttl=EXPIRING_ACCESS_TTL)
            try:
                for arm in arms.values():
                    for _ in range(count):
                        arm.sign_in_expiring()
            finally:
                api.set_faults(access_ttl=None)  # their refreshes get the usual lifetime
            time.sleep(EXPIRING_ACCESS_TTL + 0.5)

        kinds = ("warm", "refreshed")
        prepare(20)
        for arm in arms.values():  # warm-up: imports, pool threads, connections
            for kind in kinds:
                for _ in range(20):
                    getattr(arm, kind)()
        batches = [(roles_from, kind) for roles_from in arms for kind in kinds]
        cpu = {b: [0.0, 0.0] for b in batches}  # user, system
        calls = {b: {"refresh": 0, "me": 0} for b in batches}
        expected = {"warm": 0, "refreshed": per_round}
        per_round_ms: dict[str, list[float]] = {roles_from: [] for roles_from in arms}
        for index in range(rounds):
            prepare(per_round)
            spent = {}
            for roles_from, kind in batches if index % 2 == 0 else reversed(batches):
                arm = arms[roles_from]
                stats = api.stats()
                before = process_cpu_seconds(arm.worker)
                for _ in range(per_round):
                    getattr(arm, kind)()
                after_cpu = process_cpu_seconds(arm.worker)
                after = api.stats()
                spent[roles_from, kind] = [a - b for a, b in zip(after_cpu, before, strict=True)]
                made = {call: after[call] - stats[call] for call in ("refresh", "me")}
                made["me"] -= per_round  # each request's own proxied /users/me
                for call, count in made.items():
                    calls[roles_from, kind][call] += count
                where = f"(e) {storage}, AUTH_ROLES_FROM={roles_from}: {per_round} {kind} calls"
                if made["refresh"] != expected[kind]:
                    raise RuntimeError(
                        f"{where} made {made['refresh']} refreshes, not {expected[kind]}"
                    )
                if roles_from == "token" and kind == "refreshed" and made["me"]:
                    raise RuntimeError(
                        f"{where} made {made['me']} /users/me calls, not 0 "
                        "(the roles come from the access token)"
                    )
            for batch in batches:
                cpu[batch] = [c + s for c, s in zip(cpu[batch], spent[batch], strict=True)]
            for roles_from in arms:
                extra = sum(spent[roles_from, "refreshed"]) - sum(spent[roles_from, "warm"])
                per_round_ms[roles_from].append(1000 * extra / per_round)
    count = per_round * rounds
    found = {}
    for roles_from in arms:
        warm, refreshed = (
            [1000 * c / count for c in cpu[roles_from, kind]] for kind in ("warm", "refreshed")
        )
        made = calls[roles_from, "refreshed"]
        found[roles_from] = {
            "requests_per_kind": count,
            "rounds": rounds,
            "clock_tick_ms": 1000 / CLOCK_TICKS,
            "warm_page_cpu_ms": sum(warm),
            "refreshed_page_cpu_ms": sum(refreshed),
            "refresh_cpu_ms": sum(refreshed) - sum(warm),
            "refresh_system_cpu_ms": refreshed[1] - warm[1],
            "refresh_cpu_ms_per_round": per_round_ms[roles_from],
            "backend_calls": {kind: calls[roles_from, kind] for kind in kinds},
            "backend_calls_per_refresh": (made["refresh"] + made["me"]) / max(1, made["refresh"]),
        }
    return found


E_RETIRED = (
    "SPEC §5 retired the bar “a refresh ≤ 2 ms of app CPU”; a refresh may make two backend "
    "calls when roles come from /users/me, one when they come from the access token"
)


def refresh_cpu_table(found: dict[str, dict], storage: str) -> str:
    """(e) of one storage mode: a column per AUTH_ROLES_FROM."""
    refreshing = {
        COOKIES: "proxied call without its access cookie",
        SESSION: "proxied call, first of a session whose access token has expired",
    }[storage]
    columns = list(found)
    first = found[columns[0]]

    def row(measure: str, cell, note: str = "") -> str:
        return f"| {measure} | " + " | ".join(cell(found[c]) for c in columns) + f" | {note} |"

    def made(e: dict, kind: str) -> str:
        calls = e["backend_calls"][kind]
        return f"{calls['refresh']} refreshes, {calls['me']} /users/me"

    return "\n".join(
        [
            "",
            f"| (e) {storage} mode: one sync worker per server, its CPU from /proc "
            f"({first['requests_per_kind']} requests of each kind, {first['rounds']} ABBA rounds) | "
            + " | ".join(f"AUTH_ROLES_FROM={c}" for c in columns)
            + " | bar |",
            "|---|" + "---|" * len(columns) + "---|",
            row(
                "proxied /api/users/me, valid access token: app CPU",
                lambda e: f"{e['warm_page_cpu_ms']:.2f} ms",
            ),
            row(f"{refreshing}: app CPU", lambda e: f"{e['refreshed_page_cpu_ms']:.2f} ms"),
            row(
                "a refresh's own app CPU (the difference)",
                lambda e: f"**{e['refresh_cpu_ms']:.2f} ms**",
                f"none: {E_RETIRED}",
            ),
            row(
                "the same, per round",
                lambda e: ", ".join(f"{ms:.2f}" for ms in e["refresh_cpu_ms_per_round"]),
            ),
            row(
                "of which in the kernel (stime: sockets; on loopback also the far end's network stack)",
                lambda e: f"{e['refresh_system_cpu_ms']:.2f} ms",
            ),
            row(
                "backend calls per refresh (refresh + /users/me, from the API's /_stats)",
                lambda e: f"**{e['backend_calls_per_refresh']:g}**",
            ),
            row("the warm batches made (API's /_stats)", lambda e: made(e, "warm")),
            row("the refreshing batches made (API's /_stats)", lambda e: made(e, "refreshed")),
            "",
        ]
    )


# gunicorn's access log line for the bench servers: %(D)s is the request's time
# in the worker (parsed to response written), in microseconds.
ACCESS_LOG_FORMAT = '%(h)s "%(r)s" %(s)s %(D)s'


def worker_times_ms(log: str, path: str) -> list[float]:
    """Return the worker times of the 2xx GETs of `path` in a bench server's access log."""
    pattern = rf'"GET {re.escape(path)} HTTP/1\.1" 2\d\d (\d+)$'
    return [int(us) / 1000 for us in re.findall(pattern, log, re.M)]


def app_environment(work: Path, api_url: str, common: dict, *, name: str) -> dict:
    """Return the environment running_app gave server `name`, for another process of it."""
    overrides = {k: v for k, v in common.items() if k not in ("collectstatic", "gunicorn_args")}
    env = server_env(work / "app.sqlite3", API_BASEURL=api_url, **overrides)
    env.setdefault("STATIC_ROOT", str(work / f"static-{name}"))
    return env


def proxy_latency(
    api, app, browser, *, direct_token: str, app_env: dict, rounds: int, seconds: float
) -> dict:
    """(d) /api/users/me through the proxy vs the API directly, and where the proxy's time goes.

    wrk with one connection (latency, not throughput) against each, `rounds`
    rounds in ABBA order; the added median is the proxy's median p50 minus
    the direct one's. The breakdown comes from bench/proxy_breakdown.py: the
    same request sent through the app's WSGI handler in one process (the
    app server's settings, database, cache and API), every part timed. The
    direct arm sends `direct_token`, the same user's from the API's own
    sign-in (`api_access_token`).
    """
    lat = {"seconds": seconds, "connections": 1, "threads": 1}
    targets = {
        "direct": (f"{api.url}/users/me", f"access_token={direct_token}"),
        "proxy": (f"{app.url}/api/users/me", cookie_header(browser)),
        # gunicorn's floor: the same server answering before the session is read.
        "static": (f"{app.url}/static/css/site.css", cookie_header(browser)),
    }
    for url, cookie in targets.values():
        wrk(url, cookie, **{**lat, "seconds": 2})  # warm-up
    log_start = len(app.log())
    runs: dict[str, list] = {key: [] for key in targets}
    for index in range(rounds):
        for key in list(targets) if index % 2 == 0 else reversed(targets):
            runs[key].append(wrk(*targets[key], **lat))
    median = {
        f"{key}_{p}": statistics.median(r[f"{p}_ms"] for r in runs[key])
        for key in runs
        for p in ("p50", "p99")
    }
    breakdown = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "proxy_breakdown.py")]
        + ["--cookie", targets["proxy"][1]],
        env=app_env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    in_worker = worker_times_ms(app.log()[log_start:], "/api/users/me")
    return {
        **runs,
        **{f"{key}_ms": value for key, value in median.items()},
        "proxy_in_worker_p50_ms": statistics.median(in_worker) if in_worker else None,
        "added_median_ms": median["proxy_p50"] - median["direct_p50"],
        "added_p99_ms": median["proxy_p99"] - median["direct_p99"],
        "added_median_ms_per_round": [
            p["p50_ms"] - d["p50_ms"] for d, p in zip(runs["direct"], runs["proxy"], strict=True)
        ],
        "breakdown": json.loads(breakdown.stdout),
    }


D_RETIRED = (
    "SPEC §5 retired the bar “proxy ≤ 2 ms”; the side-by-side comparison with the seed app "
    "(`peers/seed-nextjs`, one run, the same backend) replaces it (a later issue)"
)


def proxy_table(d: dict, storage: str) -> str:
    rounds = ", ".join(f"{ms:.2f}" for ms in d["added_median_ms_per_round"])
    parts = d["breakdown"]
    own_wall = parts["total_wall_ms"] - parts["api_answer_wall_ms"]
    worker = d["proxy_in_worker_p50_ms"]
    in_worker = f"{worker:.2f} ms" if worker is not None else "not in the log"
    beyond = f"{worker - parts['total_wall_ms']:.3f}" if worker is not None else "?"

    def rows(entries: list, key: str) -> str:
        return "\n".join(f"| {e[key]} | {e['wall_ms']:.3f} | {e['cpu_ms']:.3f} |" for e in entries)

    return f"""
| (d) {storage} mode: `/api/users/me`, wrk -c1, {len(d["direct"])} ABBA rounds | median / p99 | bar |
|---|---|---|
| direct to the API | {d["direct_p50_ms"]:.2f} / {d["direct_p99_ms"]:.2f} ms | |
| through the proxy | {d["proxy_p50_ms"]:.2f} / {d["proxy_p99_ms"]:.2f} ms | |
| of which inside the app's gunicorn worker (its access log's request time) | {in_worker} | |
| for scale: a static file from the app's gunicorn (a new connection, parsing, WhiteNoise, the access log) | {d["static_p50_ms"]:.2f} / {d["static_p99_ms"]:.2f} ms | |
| added by the proxy (per round: {rounds}) | {d["added_median_ms"]:.2f} / {d["added_p99_ms"]:.2f} ms | none: {D_RETIRED} |

| (d) {storage} mode, where the proxy's time goes: one app process, {parts["requests"]} requests, mean of the fastest {parts["kept"]:.0%} | wall ms | CPU ms |
|---|---|---|
{rows(parts["groups"], "group")}
| **the whole request in the app** | {parts["total_wall_ms"]:.3f} | {parts["total_cpu_ms"]:.3f} |
| **the app's own time** (all but the API's answer) | {own_wall:.3f} | |
| inside the gunicorn worker under wrk, beyond the whole request measured here back to back (gunicorn's parsing and writing, a process woken for each request) | {beyond} | |

| (d) {storage} mode, each part | wall ms | CPU ms |
|---|---|---|
{rows(parts["parts"], "part")}
"""


# (g) The session stores SESSION_ENGINE may name: the first is the default
# (A), each other (B) is compared with it.
SESSION_ENGINES = ("accounts.sessions", "accounts.sessions_raw")


def spread(values: list[float]) -> float:
    """Return (max - min) / median: how far one arm's own rounds disagree."""
    return (max(values) - min(values)) / statistics.median(values)


def session_stores(
    work: Path,
    api,
    common: dict,
    *,
    storage: str,
    engines: tuple[str, ...],
    workers: int,
    rounds: int,
    load: dict,
) -> dict:
    """(g) A warm signed-in dashboard on one app server per SESSION_ENGINE, side by side.

    The servers differ only in SESSION_ENGINE (the same workers, database,
    cache and API); each browser signs in on its own. wrk against each in
    turn for `rounds` rounds, the order reversed every other round (ABBA);
    each run's app CPU is its server's workers' utime + stime from /proc
    around it, over the requests wrk counted. Then, per engine, two runs of
    bench/session_queries.py (ABBA) in a process with that server's
    environment count the statements of one request and its CPU in-process.
    Each engine's noise is the spread of its own rounds ((max - min) /
    median); each other engine is compared with the first by the ratio of
    medians and round by round.
    """
    with contextlib.ExitStack() as servers:
        apps = {
            engine: servers.enter_context(
                running_app(
                    work,
                    api_url=api.url,
                    workers=workers,
                    name=f"g-{storage}-{engine}",
                    database="g",
                    SESSION_ENGINE=engine,
                    **common,
                )
            )
            for engine in engines
        }
        pids = {
            engine: worker_pids(app.process.pid, at_least=workers) for engine, app in apps.items()
        }
        cookies = {
            engine: cookie_header(sign_in_mode(app.url, storage)) for engine, app in apps.items()
        }
        targets = {engine: f"{app.url}/dashboard/" for engine, app in apps.items()}

        def cpu_seconds(engine: str) -> float:
            return sum(sum(process_cpu_seconds(pid)) for pid in pids[engine])

        for engine in engines:  # warm-up
            wrk(targets[engine], cookies[engine], **{**load, "seconds": 2})
        runs: dict[str, list] = {engine: [] for engine in engines}
        calls = dict.fromkeys(engines, 0)
        for index in range(rounds):
            for engine in engines if index % 2 == 0 else reversed(engines):
                before, stats = cpu_seconds(engine), backend_calls(api.stats())
                run = wrk(targets[engine], cookies[engine], **load)
                spent = cpu_seconds(engine) - before
                calls[engine] += backend_calls(api.stats()) - stats
                if run["non_2xx"]:
                    raise RuntimeError(f"(g) {storage}, {engine}: {run['non_2xx']} non-2xx answers")
                runs[engine].append({**run, "cpu_ms": 1000 * spent / max(1, run["requests"])})
        in_process: dict[str, list] = {engine: [] for engine in engines}
        for index in range(2):
            for engine in engines if index % 2 == 0 else reversed(engines):
                env = app_environment(
                    work,
                    api.url,
                    {**common, "SESSION_ENGINE": engine},
                    name=f"g-{storage}-{engine}",
                )
                out = subprocess.run(
                    [sys.executable, str(ROOT / "bench" / "session_queries.py")]
                    + ["--cookie", cookies[engine]],
                    env=env,
                    cwd=ROOT,
                    capture_output=True,
                    text=True,
                    check=True,
                )
                found = json.loads(out.stdout)
                if found["engine"] != engine or found["statuses"] != [200]:
                    raise RuntimeError(f"(g) {storage}, {engine}: in-process run {found}")
                in_process[engine].append(found)
    figures = {}
    for engine in engines:
        rps = [r["rps"] for r in runs[engine]]
        cpu = [r["cpu_ms"] for r in runs[engine]]
        figures[engine] = {
            "rps": statistics.median(rps),
            "cpu_ms": statistics.median(cpu),
            "rps_noise": spread(rps),
            "cpu_noise": spread(cpu),
            "rounds": runs[engine],
            "backend_calls": calls[engine],
            "queries_per_request": in_process[engine][-1]["queries_per_request"],
            "statements_per_request": in_process[engine][-1]["statements_per_request"],
            "in_process_cpu_ms": statistics.median(r["cpu_ms"] for r in in_process[engine]),
            "in_process_runs": [r["cpu_ms"] for r in in_process[engine]],
        }
    first = engines[0]
    for engine in engines[1:]:
        mine, base = figures[engine], figures[first]
        mine["over_first"] = {
            "rps": mine["rps"] / base["rps"],
            "cpu_ms": mine["cpu_ms"] / base["cpu_ms"],
            "in_process_cpu_ms": mine["in_process_cpu_ms"] / base["in_process_cpu_ms"],
            "rps_per_round": [
                m["rps"] / b["rps"] for m, b in zip(runs[engine], runs[first], strict=True)
            ],
            "cpu_ms_per_round": [
                m["cpu_ms"] / b["cpu_ms"] for m, b in zip(runs[engine], runs[first], strict=True)
            ],
        }
    return {
        "engines": list(engines),
        "rounds": rounds,
        "workers": workers,
        "connections": load["connections"],
        "by_engine": figures,
    }


def session_stores_table(g: dict, storage: str) -> str:
    """(g) of one storage mode: a column per SESSION_ENGINE."""
    engines = g["engines"]
    first = engines[0]
    figures = g["by_engine"]

    def row(measure: str, cell) -> str:
        return f"| {measure} | " + " | ".join(cell(figures[e], e) for e in engines) + " |"

    def ratio(key: str):
        def cell(f: dict, engine: str) -> str:
            if engine == first:
                return "1 (A)"
            over = f["over_first"]
            rounds = over.get(f"{key}_per_round")
            each = f" (per round: {', '.join(f'{x:.3f}' for x in rounds)})" if rounds else ""
            return f"**{over[key]:.3f}**{each}"

        return cell

    def statements(f: dict, engine: str) -> str:
        return "; ".join(f"{n:g} × {k}" for k, n in f["statements_per_request"].items())

    return "\n".join(
        [
            "",
            f"| (g) {storage} mode: warm dashboard per SESSION_ENGINE, wrk -c{g['connections']}, "
            f"{g['rounds']} ABBA rounds, {g['workers']} sync workers each | "
            + " | ".join(f"`{e}`" for e in engines)
            + " |",
            "|---|" + "---|" * len(engines),
            row("requests/s (median of the rounds)", lambda f, e: f"{f['rps']:.0f}"),
            row("requests/s over A's", ratio("rps")),
            row(
                "app CPU per request (workers' /proc, median of the rounds)",
                lambda f, e: f"{f['cpu_ms']:.2f} ms",
            ),
            row("app CPU per request over A's", ratio("cpu_ms")),
            row(
                "noise: spread of the arm's own rounds, requests/s / CPU",
                lambda f, e: f"{f['rps_noise']:.1%} / {f['cpu_noise']:.1%}",
            ),
            row(
                "in one process, CPU per request (fastest 90%, two ABBA runs)",
                lambda f, e: (
                    f"{f['in_process_cpu_ms']:.3f} ms "
                    f"({', '.join(f'{x:.3f}' for x in f['in_process_runs'])})"
                ),
            ),
            row("in one process, CPU over A's", ratio("in_process_cpu_ms")),
            row("queries per request", lambda f, e: f"{f['queries_per_request']:g}"),
            row("the statements of one request", statements),
            row("backend calls in the rounds", lambda f, e: str(f["backend_calls"])),
            "",
        ]
    )


SEED_BARS = {
    "proxy req/s at 16 connections ≥ the seed's": lambda h, m: (
        h[f"proxy-{m}"]["rps"] >= h["seed-me"]["rps"]
    ),
    "proxy added p50 ≤ the seed's": lambda h, m: (
        h[f"proxy-{m}"]["added_p50_ms"] <= h["seed-me"]["added_p50_ms"]
    ),
    "signed-in page req/s ≥ the seed's": lambda h, m: (
        h[f"page-{m}"]["rps"] >= h["seed-page"]["rps"]
    ),
}


@contextlib.contextmanager
def running_floor(work: Path, api_url: str, *, workers: int, database_url: str = ""):
    """Serve bench/floor.py (a bare Django view relaying /users/me) as the project ships."""
    env = {**server_env(work / "floor.sqlite3"), "DJANGO_SETTINGS_MODULE": "bench.floor"}
    env["API_BASEURL"] = api_url
    env["DATABASE_URL"] = database_url
    command = [GUNICORN, "bench.floor:application", "--bind", "127.0.0.1:0"]
    command += ["--workers", str(workers), "--no-control-socket"]
    with _serve(
        command,
        env,
        work / "floor.log",
        r"Listening at: http://127\.0\.0\.1:(?P<port>\d+)",
        ServerProcess,
        stop_signal=signal.SIGQUIT,
    ) as server:
        yield server


def side_by_side(work: Path, shared: dict, *, modes, rounds, seconds):
    """(h) The project and the seed's Next.js app doing the same work, in one run.

    One reference API issuing one-hour access tokens serves both. Arms: the
    API's /users/me directly; the seed's /api/me (a route handler relaying it
    with axios) and the project's /api/users/me (the proxy) in each storage
    mode; then a signed-in page: the seed's app/bench/page.tsx (a server
    component calling auth(), bench/seed/) and the project's /dashboard/.
    The project runs as it ships: gunicorn.conf.py's workers and threads,
    PostgreSQL and Redis when they run here. Returns None (and says why) when
    the seed cannot run here.
    """
    reason = seed.missing()
    if reason:
        print(f"bench (h): skipped, {reason}", flush=True)
        return None
    print("bench (h): building the seed app (once per version, in the user's cache)", flush=True)
    folder = seed.build()
    (work / "api-seed").mkdir(exist_ok=True)
    shipped = shipped_env(shared)
    workers = SHIPPED_WORKERS
    with contextlib.ExitStack() as servers:
        api = servers.enter_context(
            running_authapi(work / "api-seed", AUTHAPI_ACCESS_TTL="3600")
        )
        peer = servers.enter_context(seed.running(folder, api.url, work / "seed.log"))
        database_url = shared.get("DATABASE_URL", "")
        floor = servers.enter_context(
            running_floor(work, api.url, workers=workers, database_url=database_url)
        )
        apps = {
            mode: servers.enter_context(
                running_app(
                    work,
                    api_url=api.url,
                    workers=workers,
                    name=f"shipped-{mode}",
                    database="shipped",
                    AUTH_TOKEN_STORAGE=mode,
                    **shipped,
                )
            )
            for mode in modes
        }
        seed_cookie = seed.cookie_header(seed.sign_in(peer.url, ADMIN.email, ADMIN.password))
        app_cookie = {mode: cookie_header(sign_in_mode(apps[mode].url, mode)) for mode in modes}
        direct = f"access_token={api_access_token(api)}"
        relayed = {
            "direct": (f"{api.url}/users/me", direct, api.process.pid),
            "seed-me": (f"{peer.url}/api/me", seed_cookie, peer.process.pid),
            "floor": (f"{floor.url}/api/users/me", direct, floor.process.pid),
        }
        if database_url.startswith("postgres") and COOKIES in modes:
            # The floor plus one read of the session's row: a cookie-mode browser's
            # sessionid with the API's token (the row is the project's own).
            session_id = app_cookie[COOKIES].split("sessionid=", 1)[1].split(";", 1)[0]
            relayed["floor-session"] = (
                f"{floor.url}/api/users/me/after-session-read",
                f"{direct}; sessionid={session_id}",
                floor.process.pid,
            )
        pages = {"seed-page": (f"{peer.url}/bench", seed_cookie, peer.process.pid)}
        for mode in modes:
            relayed[f"proxy-{mode}"] = (
                f"{apps[mode].url}/api/users/me",
                app_cookie[mode],
                apps[mode].process.pid,
            )
            pages[f"page-{mode}"] = (
                f"{apps[mode].url}/dashboard/",
                app_cookie[mode],
                apps[mode].process.pid,
            )
        print(f"bench (h): {len(relayed)} relayed arms, {rounds} ABAB rounds", flush=True)
        found = seed.measure(relayed, rounds=rounds, seconds=seconds, wrk=wrk)
        print(f"bench (h): {len(pages)} signed-in pages, {rounds} ABAB rounds", flush=True)
        found.update(seed.measure(pages, rounds=rounds, seconds=seconds, wrk=wrk))
    direct_p50 = found["direct"]["p50_ms"]
    for arm in ("seed-me", "floor", "floor-session", *(f"proxy-{mode}" for mode in modes)):
        if arm in found:
            found[arm]["added_p50_ms"] = found[arm]["p50_ms"] - direct_p50
    found = {
        "arms": found,
        "workers": workers,
        "bars": {
            f"{name} [{mode}]": bar(found, mode) for name, bar in SEED_BARS.items() for mode in modes
        },
    }
    print(seed_table(found, modes), flush=True)
    return found


def save(name: str, found) -> None:
    """Write one run's figures to bench/results/`name`."""
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / name).write_text(json.dumps(found, indent=2, default=str))


def shipped_env(shared: dict) -> dict:
    """running_app's arguments for a server as the project ships (gunicorn.conf.py's own
    threads and worker replacement), on `shared`'s database and cache."""
    return {**BENCH_ENV, **shared, "ALLOWED_HOSTS": "127.0.0.1", "collectstatic": True}


def sized(work: Path, shared: dict, *, modes, **sizing_args) -> dict:
    """(i) in each mode, printed; bars: no refresh in warm rounds, one per refreshing call."""
    shipped = shipped_env(shared)
    found: dict = {}
    for mode in modes:
        print(f"bench (i): {mode} mode", flush=True)
        found[mode] = sizing.sizing(
            work,
            shipped,
            storage=mode,
            workers=SHIPPED_WORKERS,
            wrk=wrk,
            sign_in=sign_in_mode,
            **sizing_args,
        )
    found["bars"] = {}
    for mode in modes:
        f = found[mode]
        found["bars"][f"no refresh in warm rounds, two servers [{mode}]"] = (
            f["page"]["refreshes"] == 0 and f["proxy"]["refreshes"] == 0
        )
        found["bars"][f"every call answered [{mode}]"] = not (
            f["page"]["non_2xx"] or f["proxy"]["non_2xx"] or f["refresh"]["non_2xx"]
        )
        found["bars"][f"one refresh per refreshing call [{mode}]"] = (
            f["refresh"]["refreshes"] == f["refresh"]["calls"]
        )
    print(sizing.table(found, modes), flush=True)
    return found


def seed_table(h: dict, modes) -> str:
    """(h) as a table: each arm, then the project over the seed."""
    arms = h["arms"]
    names = {
        "direct": "the API's `/users/me`, directly",
        "seed-me": "seed: `/api/me` (route handler → axios → API)",
        "seed-page": "seed: a signed-in page (server component, `auth()`)",
        "floor": "floor: a bare Django view relaying it with `requests` (bench/floor.py)",
        "floor-session": "floor + one read of the session's row from PostgreSQL",
    }
    names = {arm: name for arm, name in names.items() if arm in arms}
    for mode in modes:
        names[f"proxy-{mode}"] = f"project, {mode} mode: `/api/users/me` (proxy → API)"
        names[f"page-{mode}"] = f"project, {mode} mode: `/dashboard/`"
    lines = [
        f"| (h) side by side, one run, {len(arms['direct']['rounds']['c1'])} ABAB rounds "
        f"(project: {h['workers']} gunicorn workers as shipped) "
        "| p50 / p99, 1 conn. | added p50 | req/s, 16 conn. | server CPU / request |",
        "|---|---|---|---|---|",
    ]
    for arm, name in names.items():
        a = arms[arm]
        added = f"{a['added_p50_ms']:.2f} ms" if "added_p50_ms" in a else ""
        lines.append(
            f"| {name} | {a['p50_ms']:.2f} / {a['p99_ms']:.2f} ms | {added} "
            f"| {a['rps']:.0f} | {a['cpu_ms']:.2f} ms |"
        )
    lines.append("")
    lines.append("| (h) project over seed | " + " | ".join(modes) + " | bar |")
    lines.append("|---|" + "---|" * len(modes) + "---|")

    def ratio(key: str, ours: str, theirs: str) -> str:
        return " | ".join(
            f"{arms[ours.format(m)][key] / arms[theirs][key]:.3f}" for m in modes
        )

    marks = {name: {m: mark(h["bars"][f"{name} [{m}]"]) for m in modes} for name in SEED_BARS}
    rows = (
        ("proxy req/s at 16 conn.", "rps", "proxy-{}", "seed-me", "≥ 1"),
        ("proxy added p50", "added_p50_ms", "proxy-{}", "seed-me", "≤ 1"),
        ("proxy CPU per request", "cpu_ms", "proxy-{}", "seed-me", ""),
        ("floor (bare view) req/s at 16 conn.", "rps", "floor", "seed-me", ""),
        ("floor CPU per request", "cpu_ms", "floor", "seed-me", ""),
        ("floor + session read req/s at 16 conn.", "rps", "floor-session", "seed-me", ""),
        ("floor + session read CPU per request", "cpu_ms", "floor-session", "seed-me", ""),
        ("signed-in page req/s", "rps", "page-{}", "seed-page", "≥ 1"),
        ("signed-in page CPU per request", "cpu_ms", "page-{}", "seed-page", ""),
    )
    bar_of = {
        "proxy req/s at 16 conn.": "proxy req/s at 16 connections ≥ the seed's",
        "proxy added p50": "proxy added p50 ≤ the seed's",
        "signed-in page req/s": "signed-in page req/s ≥ the seed's",
    }
    for label, key, ours, theirs, bar in rows:
        if ours not in arms and "{" not in ours:
            continue  # no floor-session arm without PostgreSQL
        cells = ratio(key, ours, theirs)
        if label in bar_of:
            cells = " | ".join(
                f"{cell} {marks[bar_of[label]][m]}"
                for cell, m in zip(cells.split(" | "), modes, strict=True)
            )
        lines.append(f"| {label} | {cells} | {bar} |")
    return "\n".join(lines)


def load_average() -> str:
    """Return the machine's load average (1, 5, 15 minutes): how busy it was around a run."""
    return "load average " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def machine() -> dict:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        model = re.search(r"model name\s*:\s*(.+)", Path("/proc/cpuinfo").read_text())
        cpu = model[1] if model else cpu
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version()}


def dashboard_throughput(api, servers: dict, cookies: dict, *, rounds: int, load: dict) -> dict:
    """(a), (b) and (f) in each mode: the dashboard under wrk on servers side by side.

    `servers` and `cookies` are keyed by arm ("a", "b-cookies", "f-cookies",
    "b2-cookies", "f2-cookies", and the same in session mode). Each round runs every arm once, in reverse
    order every other round (ABBA for two arms, ABCCBA for three: a drift of
    the machine's speed cancels out); medians are compared. The API's
    counters are read around each wrk run, so each arm's backend calls are
    its own.
    """
    targets = {arm: f"{server.url}/dashboard/" for arm, server in servers.items()}
    for arm, url in targets.items():  # warm-up
        wrk(url, cookies[arm], **{**load, "seconds": 2})
    runs: dict[str, list] = {arm: [] for arm in targets}
    calls = dict.fromkeys(targets, 0)
    for index in range(rounds):
        for arm in list(targets) if index % 2 == 0 else reversed(targets):
            before = backend_calls(api.stats())
            runs[arm].append(wrk(targets[arm], cookies[arm], **load))
            calls[arm] += backend_calls(api.stats()) - before
    return {
        arm: {
            "rps": statistics.median(r["rps"] for r in runs[arm]),
            "rounds": runs[arm],
            "backend_calls": calls[arm],
            "backend_calls_per_request": calls[arm] / max(1, sum(r["requests"] for r in runs[arm])),
        }
        for arm in targets
    }


def fifty_with_one_expired_token(api, app, *, storage: str) -> dict:
    """(c) 50 requests at one moment sharing one expired access token; count the refresh calls.

    Each request has a copy of the browser's cookies: in cookie mode the
    expired pair itself, in session mode the one `sessionid` whose session
    holds the expired pair.
    """
    browser = sign_in_mode(app.url, storage)
    wait_until_expired(browser, storage=storage, signed_in_by=time.time(), ttl=SHORT_ACCESS_TTL)
    before = api.stats()
    answers = burst([f"{app.url}/api/users/me"] * 50, browser)
    after = api.stats()
    return {
        "cookies_sent": sorted(browser.cookies.keys()),
        "statuses": sorted({getattr(r, "status_code", repr(r)) for r in answers}),
        "refresh_calls": after["refresh"] - before["refresh"],
        "reuse_detected": after["reuse_detected"] - before["reuse_detected"],
    }


def metrics_cost(off: dict, off_twin: dict, on: dict, on_twin: dict) -> dict:
    """(f) The median of both metrics-on servers' rounds over both metrics-off servers'.

    Each pair of twins (same configuration, two servers) also gives the noise of
    telling two servers apart in this run: how far each twin's median is from
    the other's.
    """

    def pooled(*arms: dict) -> dict:
        rounds = [r for arm in arms for r in arm["rounds"]]
        return {
            "rps": statistics.median(r["rps"] for r in rounds),
            "rounds": rounds,
            "backend_calls": sum(arm["backend_calls"] for arm in arms),
        }

    metered, unmetered = pooled(on, on_twin), pooled(off, off_twin)
    return {
        "f_dashboard_metrics_on": metered,
        "f_dashboard_metrics_off": unmetered,
        "f_over_b": metered["rps"] / unmetered["rps"],
        "f_twin_ratios": {
            "off": off_twin["rps"] / off["rps"],
            "on": on_twin["rps"] / on["rps"],
        },
    }


def metrics_scrape(on, off, *, storage: str) -> dict:
    """(f) Check that the metrics-on server counts and the metrics-off one does not serve them.

    `GET /metrics` (answered to 127.0.0.1) on the metrics-on server must be a
    200 with the `auth_sessions` gauge and this server's own sign-in counted
    (every worker counts into the master's PROMETHEUS_MULTIPROC_DIR, and a
    scrape at any worker adds them up); on the metrics-off server, a 404.
    Return what the scrape shows: the sessions gauge (the database all the
    servers share), sign-ins and backend calls by answer.
    """
    response = requests.get(f"{on.url}/metrics", timeout=10)
    if response.status_code != 200 or "auth_sessions" not in response.text:
        raise RuntimeError(
            f"(f) {storage}: the metrics-on server's /metrics answered "
            f"{response.status_code}: {response.text[:500]!r}"
        )
    samples = [s for f in text_string_to_metric_families(response.text) for s in f.samples]

    def counts(name: str, *labels: str) -> dict[str, int]:
        return {
            " ".join(s.labels[label] for label in labels): int(s.value)
            for s in samples
            if s.name == name
        }

    found = {
        "sessions": counts("auth_sessions", "storage"),
        "sign_ins": counts("auth_sign_ins_total", "outcome"),
        "backend_requests": counts("auth_backend_requests_total", "endpoint", "status"),
    }
    if found["sign_ins"].get("ok", 0) < 1:
        raise RuntimeError(
            f"(f) {storage}: the metrics-on server's /metrics shows no sign-in, "
            f"though the bench signed in there: {found}"
        )
    off_status = requests.get(f"{off.url}/metrics", timeout=10).status_code
    if off_status != 404:
        raise RuntimeError(
            f"(f) {storage}: the metrics-off server's /metrics answered {off_status}"
        )
    return {**found, "metrics_off_status": off_status}


def metrics_line(scrape: dict, storage: str) -> str:
    """Return one line of what the metrics-on server's /metrics showed."""

    def shown(values: dict) -> str:
        return ", ".join(f"{k} {v}" for k, v in sorted(values.items())) or "none"

    return (
        f"(f) {storage}: /metrics of the metrics-on server after its rounds: 200; "
        f"auth_sessions {{{shown(scrape['sessions'])}}}, "
        f"auth_sign_ins_total {{{shown(scrape['sign_ins'])}}}, "
        f"auth_backend_requests_total {{{shown(scrape['backend_requests'])}}}; "
        f"the metrics-off server's: {scrape['metrics_off_status']}"
    )


# Each bar of SPEC §5, applied to each mode's results. (d) and (e) have none any
# more: SPEC §5 retired "proxy ≤ 2 ms" and "refresh ≤ 2 ms of app CPU" (D_RETIRED,
# E_RETIRED); they stay as measured figures.
BARS = {
    "(b)/(a) throughput ≥ 0.90": lambda m: m["b_over_a"] >= 0.90,
    "(b) 0 backend calls": lambda m: m["b_dashboard_with_middleware"]["backend_calls"] == 0,
    "(c) exactly 1 refresh": lambda m: m["c_fifty_with_one_expired_token"]["refresh_calls"] == 1,
    # Issue 13: counting events into Prometheus costs the warm path almost nothing.
    "(f) metrics on / off ≥ 0.97": lambda m: m["f_over_b"] >= 0.97,
}


def mark(ok: bool) -> str:
    return "✓" if ok else "✗"


SUMMARY_ROWS = (  # (measure, bar): the rows of summary_table
    ("(a) dashboard, no token middleware (one server for both modes)", ""),
    ("(b) dashboard, token middleware, valid token", "0 backend calls"),
    ("(b)/(a) throughput", "≥ 0.90"),
    ("(c) 50 concurrent requests, one expired access token", "= 1"),
    ("(d) `/api/users/me` direct to the API, median / p99", ""),
    ("(d) `/api/users/me` through the proxy, median / p99", ""),
    (
        "(d) added by the proxy, median / p99",
        "none: retired (SPEC §5); the seed comparison replaces it (a later issue)",
    ),
    ("(e) warm proxied call, app CPU, AUTH_ROLES_FROM=me / =token", ""),
    ("(e) proxied call that refreshes first, app CPU, me / token", ""),
    ("(e) a refresh's own app CPU, me / token", "none: retired (SPEC §5)"),
    ("(e) backend calls per refresh (refresh + /users/me), me / token", ""),
    ("(f) warm path, metrics on / off (two servers a side)", "≥ 0.97"),
    ("(f) noise: one server over its twin, metrics off / on", "none: the noise of (f)"),
    ("(g) warm dashboard by SESSION_ENGINE, req/s (over A)", "none: figures to decide by"),
    ("(g) app CPU per request by SESSION_ENGINE (over A)", ""),
    ("(g) noise: the spread of each engine's own rounds, req/s / CPU; …", ""),
    ("(g) queries per request by SESSION_ENGINE", ""),
)


def summary_column(results: dict, mode: str) -> list[str]:
    """Return one mode's figures, each with its bar's mark, in SUMMARY_ROWS order."""
    m = results["modes"][mode]
    ok = {name: mark(by_mode[mode]) for name, by_mode in results["bars"].items()}
    b, c = m["b_dashboard_with_middleware"], m["c_fifty_with_one_expired_token"]
    d, e = m["d_proxy_vs_direct"], m["e_refresh_cpu"]
    f = m["f_dashboard_metrics_on"]
    g = m["g_session_stores"]
    by_engine = [g["by_engine"][engine] for engine in g["engines"]]

    def over_first(key: str, unit: str, digits: int) -> str:
        cells = [f"{by_engine[0][key]:.{digits}f}{unit}"]
        cells += [f"{e[key]:.{digits}f}{unit} ({e['over_first'][key]:.3f})" for e in by_engine[1:]]
        return " / ".join(cells)

    return [
        f"{results['a_dashboard_without_middleware']['rps']:.0f} req/s",
        f"{b['rps']:.0f} req/s, {b['backend_calls']} backend calls {ok['(b) 0 backend calls']}",
        f"{m['b_over_a']:.3f} {ok['(b)/(a) throughput ≥ 0.90']}",
        f"{c['refresh_calls']} refresh call(s), statuses {c['statuses']}, "
        f"{c['reuse_detected']} reuse {ok['(c) exactly 1 refresh']}",
        f"{d['direct_p50_ms']:.2f} / {d['direct_p99_ms']:.2f} ms",
        f"{d['proxy_p50_ms']:.2f} / {d['proxy_p99_ms']:.2f} ms",
        f"{d['added_median_ms']:.2f} / {d['added_p99_ms']:.2f} ms",
        " / ".join(f"{e[r]['warm_page_cpu_ms']:.2f}" for r in ROLES_FROM) + " ms",
        " / ".join(f"{e[r]['refreshed_page_cpu_ms']:.2f}" for r in ROLES_FROM) + " ms",
        " / ".join(f"{e[r]['refresh_cpu_ms']:.2f}" for r in ROLES_FROM) + " ms",
        " / ".join(
            f"{e[r]['backend_calls_per_refresh']:g} "
            f"({e[r]['backend_calls']['refreshed']['refresh']} + "
            f"{e[r]['backend_calls']['refreshed']['me']})"
            for r in ROLES_FROM
        ),
        f"{f['rps']:.0f} / {m['f_dashboard_metrics_off']['rps']:.0f} req/s = "
        f"{m['f_over_b']:.3f}, {f['backend_calls']} backend calls "
        f"{ok['(f) metrics on / off ≥ 0.97']}",
        f"{m['f_twin_ratios']['off']:.3f} / {m['f_twin_ratios']['on']:.3f}",
        over_first("rps", "", 0),
        over_first("cpu_ms", " ms", 2),
        "; ".join(f"{e['rps_noise']:.1%} / {e['cpu_noise']:.1%}" for e in by_engine),
        " / ".join(f"{e['queries_per_request']:g}" for e in by_engine),
    ]


def summary_table(results: dict, modes: tuple[str, ...]) -> str:
    """Every figure and bar, one column per mode."""
    columns = {mode: summary_column(results, mode) for mode in modes}
    lines = [
        "| measure | " + " | ".join(f"AUTH_TOKEN_STORAGE={m}" for m in modes) + " | bar |",
        "|---|" + "---|" * len(modes) + "---|",
    ]
    for index, (measure, bar) in enumerate(SUMMARY_ROWS):
        cells = " | ".join(columns[mode][index] for mode in modes)
        lines.append(f"| {measure} | {cells} | {bar} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers per server")
    parser.add_argument("--seconds", type=float, default=4, help="length of each wrk round")
    parser.add_argument("--rounds", type=int, default=6, help="interleaved rounds of (a) and (b)")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument(
        "--storage",
        choices=("auto", "postgres", "sqlite"),
        default="auto",
        help="the app's database and cache",
    )
    parser.add_argument(
        "--token-storage",
        dest="modes",
        choices=(*MODES, "both"),
        default="both",
        help="AUTH_TOKEN_STORAGE of the app servers: each mode in turn (both) or one",
    )
    parser.add_argument(
        "--only",
        choices=("refresh-cpu", "proxy", "sessions", "seed", "sizing"),
        help="run only this measurement: (e), (d), (g), (h) or (i)",
    )
    parser.add_argument(
        "--session-engines",
        default=",".join(SESSION_ENGINES),
        help="(g): the SESSION_ENGINEs to compare, comma-separated, the first the baseline",
    )
    parser.add_argument("--proxy-rounds", type=int, default=4, help="ABBA rounds of (d)")
    parser.add_argument("--proxy-seconds", type=float, default=5, help="length of a (d) round")
    parser.add_argument(
        "--refresh-requests", type=int, default=200, help="requests per kind and round of (e)"
    )
    parser.add_argument("--refresh-rounds", type=int, default=4, help="ABBA rounds of (e)")
    parser.add_argument("--seed-rounds", type=int, default=3, help="ABAB rounds of (h)")
    parser.add_argument("--seed-seconds", type=float, default=5, help="length of an (h) run")
    parser.add_argument("--sizing-rounds", type=int, default=3, help="warm rounds of (i)")
    parser.add_argument("--sizing-seconds", type=float, default=5, help="length of an (i) round")
    parser.add_argument(
        "--sizing-refreshes", type=int, default=100, help="refreshing calls of (i), per mode"
    )
    args = parser.parse_args()
    modes = MODES if args.modes == "both" else (args.modes,)
    if args.only != "refresh-cpu":  # (e) alone needs no wrk
        ensure_wrk()
    results: dict = {"machine": machine(), "workers": args.workers, "token_storage": modes}
    per_mode: dict[str, dict] = {mode: {} for mode in modes}
    results["modes"] = per_mode

    with (
        tempfile.TemporaryDirectory(prefix="bench-") as tmp,
        shared_storage(args.storage, "bench") as (
            label,
            shared,
        ),
    ):
        work = Path(tmp)
        for name in ("api", "api-short", "api-sessions"):
            (work / name).mkdir()
        results["storage"] = label
        common = {
            **BENCH_ENV,
            **shared,
            "ALLOWED_HOSTS": "127.0.0.1",
            "collectstatic": True,
            # No worker recycling in the middle of a measurement.
            # The access log names each request's time in the worker ((d) reads it).
            "gunicorn_args": ("--max-requests", "0", "--access-logformat", ACCESS_LOG_FORMAT),
            # Sync workers: one request per connection, so wrk's connections
            # spread evenly over the workers (keep-alive pins them to one).
            "GUNICORN_THREADS": "1",
        }
        mode_env = {mode: {**common, "AUTH_TOKEN_STORAGE": mode} for mode in modes}
        refresh_args = {"per_round": args.refresh_requests, "rounds": args.refresh_rounds}
        if args.only == "refresh-cpu":
            print(f"bench (e) only: {label}, {machine()['cpu']}", flush=True)
            found = {}
            for mode in modes:
                found[mode] = refresh_cpu(work, mode_env[mode], storage=mode, **refresh_args)
                print(refresh_cpu_table(found[mode], mode), flush=True)
            save("refresh_cpu.json", found)
            return 0  # no bar: figures only (E_RETIRED); a failed sanity check raises
        proxy_args = {"rounds": args.proxy_rounds, "seconds": args.proxy_seconds}
        load = {"seconds": args.seconds, "connections": args.connections, "threads": 2}
        session_args = {
            "engines": tuple(args.session_engines.split(",")),
            "workers": args.workers,
            "rounds": args.rounds,
            "load": load,
        }
        seed_args = {"rounds": args.seed_rounds, "seconds": args.seed_seconds}
        sizing_args = {
            "rounds": args.sizing_rounds,
            "seconds": args.sizing_seconds,
            "refreshes": args.sizing_refreshes,
        }
        if args.only == "sizing":
            print(f"bench (i) only: {label}, {machine()['cpu']}, {load_average()}", flush=True)
            found = sized(work, shared, modes=modes, **sizing_args)
            print(f"after: {load_average()}")
            save("sizing.json", found)
            return int(not all(found["bars"].values()))
        if args.only == "seed":
            print(f"bench (h) only: {label}, {machine()['cpu']}, {load_average()}", flush=True)
            found = side_by_side(work, shared, modes=modes, **seed_args)
            print(f"after: {load_average()}")
            save("seed.json", found)
            return 0 if found is None else int(not all(found["bars"].values()))
        if args.only == "sessions":
            print(f"bench (g) only: {label}, {machine()['cpu']}, {load_average()}", flush=True)
            found = {}
            with running_authapi(work / "api") as api:
                for mode in modes:
                    found[mode] = session_stores(
                        work, api, mode_env[mode], storage=mode, **session_args
                    )
                    print(session_stores_table(found[mode], mode), flush=True)
            print(f"after: {load_average()}")
            save("sessions.json", found)
            return 0  # no bar: figures to decide by
        if args.only == "proxy":
            print(f"bench (d) only: {label}, {machine()['cpu']}", flush=True)
            found = {}
            with running_authapi(work / "api") as api:
                for mode in modes:
                    with running_app(
                        work,
                        api_url=api.url,
                        workers=args.workers,
                        name=f"with-{mode}",
                        **mode_env[mode],
                    ) as on:
                        app_env = app_environment(
                            work, api.url, mode_env[mode], name=f"with-{mode}"
                        )
                        found[mode] = proxy_latency(
                            api,
                            on,
                            sign_in_mode(on.url, mode),
                            direct_token=api_access_token(api),
                            app_env=app_env,
                            **proxy_args,
                        )
                    print(proxy_table(found[mode], mode))
            save("proxy.json", found)
            return 0  # no bar: figures only (D_RETIRED)
        with contextlib.ExitStack() as servers:
            api = servers.enter_context(running_authapi(work / "api"))
            off = servers.enter_context(
                running_app(
                    work,
                    api_url=api.url,
                    workers=args.workers,
                    name="without",
                    BENCH_WITHOUT_TOKEN_MIDDLEWARE="1",
                    **common,
                )
            )
            on = {
                mode: servers.enter_context(
                    running_app(
                        work,
                        api_url=api.url,
                        workers=args.workers,
                        name=f"with-{mode}",
                        **mode_env[mode],
                    )
                )
                for mode in modes
            }
            # (f): (b) again with AUTH_METRICS on, its workers counting into a
            # directory of its own (gunicorn.conf.py would make one, unless the
            # environment names one that another server would share).
            for mode in modes:
                (work / f"prometheus-{mode}").mkdir()
            metered = {
                mode: servers.enter_context(
                    running_app(
                        work,
                        api_url=api.url,
                        workers=args.workers,
                        name=f"metrics-{mode}",
                        AUTH_METRICS="1",
                        PROMETHEUS_MULTIPROC_DIR=str(work / f"prometheus-{mode}"),
                        **mode_env[mode],
                    )
                )
                for mode in modes
            }
            # Two servers of one configuration differ here by several per cent
            # (bench/README.md, "(f) and the noise of two servers"), more than
            # (f)'s 3% bar: so (f) pools two servers per side, and the second
            # of each shows that noise in the same run.
            twins = {}
            for mode in modes:
                (work / f"prometheus-{mode}-twin").mkdir()
                twins[f"b2-{mode}"] = servers.enter_context(
                    running_app(
                        work,
                        api_url=api.url,
                        workers=args.workers,
                        name=f"with-{mode}-twin",
                        **mode_env[mode],
                    )
                )
                twins[f"f2-{mode}"] = servers.enter_context(
                    running_app(
                        work,
                        api_url=api.url,
                        workers=args.workers,
                        name=f"metrics-{mode}-twin",
                        AUTH_METRICS="1",
                        PROMETHEUS_MULTIPROC_DIR=str(work / f"prometheus-{mode}-twin"),
                        **mode_env[mode],
                    )
                )
            print(
                f"bench: {label}, {args.workers} workers per server, "
                f"AUTH_TOKEN_STORAGE {' and '.join(modes)}",
                flush=True,
            )
            # (a), (b) and (f): one server without the middleware, one with it
            # per mode and one more per mode with metrics on, all on the same
            # database; each browser signs in on its own server (so the
            # metrics-on server counts a sign-in); (a) gets the first one's
            # cookies. Each (f) runs right after its (b) in a round.
            browsers = {mode: sign_in_mode(on[mode].url, mode) for mode in modes}
            metered_browsers = {mode: sign_in_mode(metered[mode].url, mode) for mode in modes}
            arms = {"a": off}
            cookies = {"a": cookie_header(browsers[modes[0]])}
            for mode in modes:
                arms[f"b-{mode}"], arms[f"f-{mode}"] = on[mode], metered[mode]
                cookies[f"b-{mode}"] = cookie_header(browsers[mode])
                cookies[f"f-{mode}"] = cookie_header(metered_browsers[mode])
                for twin in (f"b2-{mode}", f"f2-{mode}"):
                    arms[twin] = twins[twin]
                    cookies[twin] = cookie_header(sign_in_mode(twins[twin].url, mode))
            measured = dashboard_throughput(api, arms, cookies, rounds=args.rounds, load=load)
            results["a_dashboard_without_middleware"] = measured["a"]
            for mode in modes:
                per_mode[mode]["b_dashboard_with_middleware"] = measured[f"b-{mode}"]
                per_mode[mode]["b_over_a"] = measured[f"b-{mode}"]["rps"] / measured["a"]["rps"]
                per_mode[mode].update(
                    metrics_cost(
                        measured[f"b-{mode}"],
                        measured[f"b2-{mode}"],
                        measured[f"f-{mode}"],
                        measured[f"f2-{mode}"],
                    )
                )
                scrape = metrics_scrape(metered[mode], on[mode], storage=mode)
                per_mode[mode]["f_metrics_scrape"] = scrape
                print(metrics_line(scrape, mode), flush=True)

            # (d) proxy vs direct, one connection: latency, not throughput.
            for mode in modes:
                print(f"bench: (d) in {mode} mode", flush=True)
                app_env = app_environment(work, api.url, mode_env[mode], name=f"with-{mode}")
                per_mode[mode]["d_proxy_vs_direct"] = proxy_latency(
                    api,
                    on[mode],
                    browsers[mode],
                    direct_token=api_access_token(api),
                    app_env=app_env,
                    **proxy_args,
                )

        # (c) 50 concurrent requests, one expired access token.
        with running_authapi(
            work / "api-short",
            AUTHAPI_ACCESS_TTL=str(SHORT_ACCESS_TTL),
            AUTHAPI_REFRESH_DELAY="0.2",
        ) as short_api:
            for mode in modes:
                print(f"bench: (c) in {mode} mode", flush=True)
                with running_app(
                    work,
                    api_url=short_api.url,
                    workers=args.workers,
                    name=f"c-{mode}",
                    database="c",
                    **mode_env[mode],
                ) as app_c:
                    per_mode[mode]["c_fifty_with_one_expired_token"] = fifty_with_one_expired_token(
                        short_api, app_c, storage=mode
                    )

        # (g) the session stores, one server per SESSION_ENGINE, side by side.
        with running_authapi(work / "api-sessions") as api:
            for mode in modes:
                print(f"bench: (g) in {mode} mode", flush=True)
                per_mode[mode]["g_session_stores"] = session_stores(
                    work, api, mode_env[mode], storage=mode, **session_args
                )

        # (e) the app's own CPU and backend calls per refresh, one sync worker per
        # AUTH_ROLES_FROM, side by side.
        for mode in modes:
            print(f"bench: (e) in {mode} mode", flush=True)
            per_mode[mode]["e_refresh_cpu"] = refresh_cpu(
                work, mode_env[mode], storage=mode, **refresh_args
            )

        # (h) side by side with the seed's Next.js app (issue 23), the project as it ships.
        print("bench: (h) side by side with the seed app", flush=True)
        results["h_side_by_side"] = side_by_side(work, shared, modes=modes, **seed_args)

        # (i) sizing: two servers as shipped on one PostgreSQL and one Redis (issue 23).
        print("bench: (i) sizing", flush=True)
        results["i_sizing"] = sized(work, shared, modes=modes, **sizing_args)

    bars = {name: {mode: check(per_mode[mode]) for mode in modes} for name, check in BARS.items()}
    results["bars"] = bars
    for mode in modes:
        print(f"\n### AUTH_TOKEN_STORAGE={mode}")
        print(proxy_table(per_mode[mode]["d_proxy_vs_direct"], mode))
        print(refresh_cpu_table(per_mode[mode]["e_refresh_cpu"], mode))
        print(session_stores_table(per_mode[mode]["g_session_stores"], mode))
    m = results["machine"]
    print(
        f"\n### Summary\n\nMachine: {m['cpu']}, {m['cores']} cores, Python {m['python']}; "
        f"{label}; gunicorn, {args.workers} sync workers per server; {load_average()} "
        "at the end.\n"
    )
    print(summary_table(results, modes))
    if len(modes) == 2:
        b = {mode: per_mode[mode]["b_dashboard_with_middleware"]["rps"] for mode in modes}
        print(
            f"\n(b) session / (b) cookies: {b[SESSION] / b[COOKIES]:.3f} "
            "(the same rounds, interleaved with (a))."
        )
    print(f"\n(d) has no bar: {D_RETIRED}.\n(e) has no bar: {E_RETIRED}.")
    missed = [
        f"{name} [{mode}]"
        for name, by_mode in bars.items()
        for mode, ok in by_mode.items()
        if not ok
    ]
    if results["h_side_by_side"]:
        print("\n### (h) Side by side with the seed app\n")
        print(seed_table(results["h_side_by_side"], modes))
        missed += [f"(h) {name}" for name, ok in results["h_side_by_side"]["bars"].items() if not ok]
    print("\n### (i) Sizing\n")
    print(sizing.table(results["i_sizing"], modes))
    missed += [f"(i) {name}" for name, ok in results["i_sizing"]["bars"].items() if not ok]
    print(f"\nBars missed: {', '.join(missed) if missed else 'none'}.")
    save("bench.json", results)
    return 0 if not missed else 1


if __name__ == "__main__":
    sys.exit(main())
