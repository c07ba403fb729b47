"""bench/run.py's (i): what one request costs, to size a deployment (see bench/README.md).

Two app servers as they ship (gunicorn.conf.py's workers and threads) share
one PostgreSQL and one Redis, as two boxes behind a load balancer would, and
one reference API issuing one-hour access tokens. One browser signs in once;
its cookies go to both servers at the same time (wrk, 8 connections each):

- warm rounds of the signed-in page (`/dashboard/`) and of a proxied call
  (`/api/users/me`): requests/s of the pair, each server tree's CPU (from
  /proc) per request, and the API's refresh calls during them, which must
  be 0 (a server that did not trust the other's refresh would make some);
- refreshed calls: the proxied call after its access token has lapsed,
  sent one after another to the two servers in turn (cookie mode: the
  browser sends no access cookie, so each call refreshes and the next goes
  to the other server with the rotated pair; session mode: the first call
  of sessions signed in while the API issued 2-second tokens). Each must
  make exactly one refresh.

Requests/s per core is 1000 over the app's CPU milliseconds per request:
the app's own cost, without the backend's (which shares these 2 cores
here). On 2 cores two servers cannot show growth with servers: they share
the cores the load and the API need too.
"""

import concurrent.futures
import contextlib
import statistics
import time
from pathlib import Path

import requests

from bench import seed
from tests.servers import running_app, running_authapi

EXPIRING_ACCESS_TTL = 2
PAGES = {"page": "/dashboard/", "proxy": "/api/users/me"}
COOKIES = ("sessionid", "access_token", "refresh_token")


def sizing(
    work: Path,
    shipped: dict,
    *,
    storage: str,
    workers: int,
    rounds: int,
    seconds: float,
    refreshes: int,
    wrk,
    sign_in,
) -> dict:
    """(i) in one token storage mode; `shipped` is the servers' environment, `workers` each
    one's gunicorn workers."""
    folder = work / f"api-sizing-{storage}"
    folder.mkdir(exist_ok=True)
    with contextlib.ExitStack() as stack:
        api = stack.enter_context(running_authapi(folder, AUTHAPI_ACCESS_TTL="3600"))
        servers = [
            stack.enter_context(
                running_app(
                    work,
                    api_url=api.url,
                    workers=workers,
                    name=f"sizing-{storage}-{index}",
                    database=f"sizing-{storage}",
                    AUTH_TOKEN_STORAGE=storage,
                    **shipped,
                )
            )
            for index in (1, 2)
        ]
        browser = sign_in(servers[0].url, storage)
        jar = {name: browser.cookies.get(name) for name in COOKIES if browser.cookies.get(name)}
        header = "; ".join(f"{k}={v}" for k, v in jar.items())
        found: dict = {"servers": 2, "workers": workers}
        for kind, path in PAGES.items():
            found[kind] = _warm(api, servers, path, header, rounds=rounds, seconds=seconds, wrk=wrk)
        found["refresh"] = _refreshes(api, servers, storage, jar, refreshes, sign_in)
        warm_proxy = found["proxy"]["cpu_ms"]
        found["refresh"]["own_cpu_ms"] = found["refresh"]["cpu_ms"] - warm_proxy
        for kind in (*PAGES, "refresh"):
            found[kind]["per_core_rps"] = 1000 / found[kind]["cpu_ms"]
    return found


def _cpu(servers) -> float:
    return sum(seed.tree_cpu_seconds(server.process.pid) for server in servers)


def _warm(api, servers, path: str, header: str, *, rounds: int, seconds: float, wrk) -> dict:
    """Both servers under wrk at once, `rounds` times; the pair's figures per round."""
    urls = [server.url + path for server in servers]
    with concurrent.futures.ThreadPoolExecutor(len(urls)) as pool:

        def both(run_seconds: float) -> list[dict]:
            return list(
                pool.map(
                    lambda url: wrk(url, header, seconds=run_seconds, connections=8, threads=1),
                    urls,
                )
            )

        both(2)  # warm-up: imports, pools, connections
        rps, cpu_ms, refreshes, errors = [], [], 0, 0
        for _ in range(rounds):
            before_calls, before_cpu = api.stats()["refresh"], _cpu(servers)
            runs = both(seconds)
            spent = _cpu(servers) - before_cpu
            refreshes += api.stats()["refresh"] - before_calls
            answered = sum(run["requests"] for run in runs)
            errors += sum(run["non_2xx"] for run in runs)
            rps.append(sum(run["rps"] for run in runs))
            cpu_ms.append(1000 * spent / max(1, answered))
    return {
        "rps": statistics.median(rps),
        "cpu_ms": statistics.median(cpu_ms),
        "refreshes": refreshes,
        "non_2xx": errors,
    }


def _refreshes(api, servers, storage: str, jar: dict, count: int, sign_in) -> dict:
    """`count` proxied calls that each refresh, alternating between the servers."""
    http = requests.Session()
    expired: list[dict] = []
    if storage == "session":
        api.set_faults(access_ttl=EXPIRING_ACCESS_TTL)
        try:
            for index in range(count):
                browser = sign_in(servers[index % 2].url, storage)
                expired.append({"sessionid": browser.cookies["sessionid"]})
        finally:
            api.set_faults(access_ttl=None)
        time.sleep(EXPIRING_ACCESS_TTL + 0.5)
    jar = dict(jar)
    before_calls, before_cpu = api.stats()["refresh"], _cpu(servers)
    failed = 0
    for index in range(count):
        if storage == "session":
            cookies = expired.pop()
        else:
            cookies = {k: v for k, v in jar.items() if k != "access_token"}
        http.cookies.clear()
        response = http.get(
            f"{servers[index % 2].url}/api/users/me",
            headers={"Cookie": "; ".join(f"{k}={v}" for k, v in cookies.items())},
            allow_redirects=False,
            timeout=30,
        )
        failed += response.status_code != 200
        for name in COOKIES:
            if response.cookies.get(name):
                jar[name] = response.cookies.get(name)
    spent = _cpu(servers) - before_cpu
    return {
        "calls": count,
        "refreshes": api.stats()["refresh"] - before_calls,
        "non_2xx": failed,
        "cpu_ms": 1000 * spent / count,
    }


def table(found: dict, modes) -> str:
    """(i) as a table: per mode, each kind's figures."""
    lines = [
        "(i) sizing: two app servers as shipped, one PostgreSQL, one Redis; app CPU only",
        "| request | "
        + " | ".join(f"{m}: req/s (pair), CPU ms/req, req/s per core, refreshes" for m in modes)
        + " |",
        "|---|" + "---|" * len(modes),
    ]
    names = {
        "page": "warm signed-in page",
        "proxy": "warm proxied call",
        "refresh": "proxied call that refreshes",
    }
    for kind, name in names.items():
        cells = []
        for mode in modes:
            f = found[mode][kind]
            rps = f"{f['rps']:.0f}" if "rps" in f else "one at a time"
            expected = f["calls"] if kind == "refresh" else 0
            cells.append(
                f"{rps}, {f['cpu_ms']:.2f}, {f['per_core_rps']:.0f}, "
                f"{f['refreshes']} (expected {expected})"
            )
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    own = ", ".join(f"{m} {found[m]['refresh']['own_cpu_ms']:.2f} ms" for m in modes)
    lines.append(f"a refresh's own app CPU (refreshed call over warm call): {own}")
    return "\n".join(lines)
