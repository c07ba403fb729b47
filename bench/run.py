"""The benchmark of SPEC §5, in one run on one machine (see bench/README.md).

    python bench/run.py            (or: make bench)

(a) the dashboard without the token middleware, (b) the same dashboard with it
and a valid access token: throughput ratio b/a and backend calls per request;
(c) 50 concurrent requests sharing one expired access token: refresh calls;
(d) /api/users/me through the proxy vs the reference API directly: added
median and p99 latency. Load comes from wrk (Debian's package). Prints a
Markdown table and writes bench/results/bench.json.
"""

import argparse
import contextlib
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.flows import burst, sign_in, wait_until_access_expired
from tests.servers import (
    running_app,
    running_authapi,
    shared_storage,
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
    names = ("sessionid", "access_token", "refresh_token")
    return "; ".join(f"{n}={browser.cookies.get(n)}" for n in names if browser.cookies.get(n))


def backend_calls(stats: dict) -> int:
    return sum(stats[k] for k in ("login", "refresh", "logout", "me", "me_rejected"))


def machine() -> dict:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        model = re.search(r"model name\s*:\s*(.+)", Path("/proc/cpuinfo").read_text())
        cpu = model[1] if model else cpu
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers per server")
    parser.add_argument("--seconds", type=float, default=4, help="length of each wrk round")
    parser.add_argument("--rounds", type=int, default=6, help="interleaved rounds of (a) and (b)")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--storage", choices=("auto", "postgres", "sqlite"), default="auto")
    args = parser.parse_args()
    ensure_wrk()
    bench_env = {"DJANGO_SETTINGS_MODULE": "config.settings.bench", "SECRET_KEY": "b" * 60}
    results: dict = {"machine": machine(), "workers": args.workers}

    with (
        tempfile.TemporaryDirectory(prefix="bench-") as tmp,
        shared_storage(args.storage, "bench") as (
            label,
            shared,
        ),
    ):
        work = Path(tmp)
        for name in ("api", "api-short"):
            (work / name).mkdir()
        results["storage"] = label
        common = {
            **bench_env,
            **shared,
            "ALLOWED_HOSTS": "127.0.0.1",
            "collectstatic": True,
            # No worker recycling in the middle of a measurement.
            "gunicorn_args": ("--max-requests", "0"),
            # Sync workers: one request per connection, so wrk's connections
            # spread evenly over the workers (keep-alive pins them to one).
            "GUNICORN_THREADS": "1",
        }
        with (
            running_authapi(work / "api") as api,
            running_app(work, api_url=api.url, workers=args.workers, name="with", **common) as on,
            running_app(
                work,
                api_url=api.url,
                workers=args.workers,
                name="without",
                BENCH_WITHOUT_TOKEN_MIDDLEWARE="1",
                **common,
            ) as off,
        ):
            print(f"bench: {label}, {args.workers} workers per server", flush=True)
            browser = sign_in(on.url)
            cookie = cookie_header(browser)
            load = {"seconds": args.seconds, "connections": args.connections, "threads": 2}
            wrk(f"{on.url}/dashboard/", cookie, **{**load, "seconds": 2})  # warm-up
            wrk(f"{off.url}/dashboard/", cookie, **{**load, "seconds": 2})
            rounds = {"a": [], "b": []}
            calls_before = backend_calls(api.stats())
            targets = {"a": f"{off.url}/dashboard/", "b": f"{on.url}/dashboard/"}
            for index in range(args.rounds):
                # ABBA order cancels a drift of the machine's speed during the run.
                for key in ("a", "b") if index % 2 == 0 else ("b", "a"):
                    rounds[key].append(wrk(targets[key], cookie, **load))
            calls = backend_calls(api.stats()) - calls_before
            a_rps = statistics.median(r["rps"] for r in rounds["a"])
            b_rps = statistics.median(r["rps"] for r in rounds["b"])
            b_requests = sum(r["requests"] for r in rounds["b"])
            results["a_dashboard_without_middleware"] = {"rps": a_rps, "rounds": rounds["a"]}
            results["b_dashboard_with_middleware"] = {
                "rps": b_rps,
                "rounds": rounds["b"],
                "backend_calls": calls,
                "backend_calls_per_request": calls / max(1, b_requests),
            }
            results["b_over_a"] = b_rps / a_rps

            # (d) proxy vs direct, one connection: latency, not throughput.
            lat = {"seconds": max(args.seconds, 6), "connections": 1, "threads": 1}
            direct_cookie = f"access_token={browser.cookies.get('access_token')}"
            proxy, direct, own = [], [], []
            for _ in range(2):
                direct.append(wrk(f"{api.url}/users/me", direct_cookie, **lat))
                proxy.append(wrk(f"{on.url}/api/users/me", cookie, **lat))
                # The breakdown: the same request path through gunicorn, the
                # middleware (session, cookie check) and the proxy view, but a
                # path the proxy refuses (404) so no backend call is made.
                own.append(wrk(f"{on.url}/api/not-proxied", cookie, **lat))
            med = {
                k: statistics.median(r[f"{k}_ms"] for r in proxy)
                - statistics.median(r[f"{k}_ms"] for r in direct)
                for k in ("p50", "p99")
            }
            own_p50 = statistics.median(r["p50_ms"] for r in own)
            results["d_proxy_vs_direct"] = {
                "direct": direct,
                "proxy": proxy,
                "app_without_backend_call": own,
                "added_median_ms": med["p50"],
                "added_p99_ms": med["p99"],
                "breakdown_median_ms": {
                    "app_request_path_without_the_call": own_p50,
                    "the_call_from_the_app_beyond_a_direct_one": med["p50"] - own_p50,
                },
            }

        # (c) 50 concurrent requests, one expired access token.
        with (
            running_authapi(
                work / "api-short", AUTHAPI_ACCESS_TTL="8", AUTHAPI_REFRESH_DELAY="0.2"
            ) as short_api,
            running_app(
                work, api_url=short_api.url, workers=args.workers, name="c", database="c", **common
            ) as app_c,
        ):
            browser = sign_in(app_c.url)
            wait_until_access_expired(browser)
            before = short_api.stats()
            answers = burst([f"{app_c.url}/api/users/me"] * 50, browser)
            after = short_api.stats()
            results["c_fifty_with_one_expired_token"] = {
                "statuses": sorted({getattr(r, "status_code", repr(r)) for r in answers}),
                "refresh_calls": after["refresh"] - before["refresh"],
                "reuse_detected": after["reuse_detected"] - before["reuse_detected"],
            }

    bars = {
        "(b)/(a) throughput ≥ 0.90": results["b_over_a"] >= 0.90,
        "(b) 0 backend calls": results["b_dashboard_with_middleware"]["backend_calls"] == 0,
        "(c) exactly 1 refresh": results["c_fifty_with_one_expired_token"]["refresh_calls"] == 1,
        "(d) proxy adds ≤ 2 ms median": results["d_proxy_vs_direct"]["added_median_ms"] <= 2.0,
    }
    results["bars"] = bars
    c = results["c_fifty_with_one_expired_token"]
    d = results["d_proxy_vs_direct"]
    print(f"""
Machine: {results["machine"]["cpu"]}, {results["machine"]["cores"]} cores, Python {results["machine"]["python"]}; {label}; gunicorn, {args.workers} sync workers per server.

| measure | result | bar |
|---|---|---|
| (a) dashboard, no token middleware | {a_rps:.0f} req/s | |
| (b) dashboard, token middleware, valid token | {b_rps:.0f} req/s, {results["b_dashboard_with_middleware"]["backend_calls"]} backend calls | |
| (b)/(a) throughput | {results["b_over_a"]:.3f} | ≥ 0.90 {"✓" if bars["(b)/(a) throughput ≥ 0.90"] else "✗"} |
| (c) 50 concurrent, one expired token | {c["refresh_calls"]} refresh call(s), statuses {c["statuses"]}, {c["reuse_detected"]} reuse | = 1 {"✓" if bars["(c) exactly 1 refresh"] else "✗"} |
| (d) /api/users/me direct, median / p99 | {statistics.median(r["p50_ms"] for r in d["direct"]):.2f} / {statistics.median(r["p99_ms"] for r in d["direct"]):.2f} ms | |
| (d) /api/users/me via proxy, median / p99 | {statistics.median(r["p50_ms"] for r in d["proxy"]):.2f} / {statistics.median(r["p99_ms"] for r in d["proxy"]):.2f} ms | |
| (d) added by the proxy, median / p99 | {d["added_median_ms"]:.2f} / {d["added_p99_ms"]:.2f} ms | ≤ 2 ms median {"✓" if bars["(d) proxy adds ≤ 2 ms median"] else "✗"} |
| (d) of which: gunicorn + middleware + proxy view, no backend call (`/api/not-proxied`, 404), median | {d["breakdown_median_ms"]["app_request_path_without_the_call"]:.2f} ms | |
| (d) of which: the backend call made by the app, beyond a direct one, median | {d["breakdown_median_ms"]["the_call_from_the_app_beyond_a_direct_one"]:.2f} ms | |
""")
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(json.dumps(results, indent=2, default=str))
    return 0 if all(bars.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
