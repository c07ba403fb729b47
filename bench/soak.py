"""Soak with faults: virtual users browse through many token lifetimes while the
auth API is frozen for a while and a gunicorn worker is killed.

    python bench/soak.py --users 50 --seconds 120      (or: make soak)

Starts the reference API (short access tokens) and the app under gunicorn, on
PostgreSQL and Redis when they run on this machine (the production path),
else on SQLite and the database cache. Each virtual user has its own cookie
jar, signs in through the form and then clicks around, sometimes with a burst
of parallel requests the way a page with several fetches does. A third of the
way in the API is paused (SIGSTOP) for --pause seconds; two thirds in one
gunicorn worker is killed (SIGKILL). Prints a table and writes
bench/results/soak.json; exits 1 if a bar is missed:

    0 spurious sign-outs, 0 reuse detections, 0 5xx outside the pause window,
    every user still signed in at the end.
"""

import argparse
import json
import os
import random
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import requests

from authapi.demo import DEMO_USERS
from tests.flows import adopt_cookies, sign_in_as
from tests.servers import (
    running_app,
    running_authapi,
    shared_storage,
    worker_pids,
)

ADMIN, EVALUATOR, _ = DEMO_USERS
PAGES = {
    ADMIN.email: [
        "/dashboard/",
        "/dashboard/admin/",
        "/dashboard/evaluations/",
        "/api/users/me",
        "/dashboard/profile/",
        "/",
    ],
    EVALUATOR.email: [
        "/dashboard/",
        "/dashboard/evaluations/",
        "/api/users/me",
        "/dashboard/profile/",
        "/",
    ],
}
BACKEND_TIMEOUT = 5.0  # the app's AUTH_BACKEND_TIMEOUT: how long a stalled call can hang


@dataclass
class Sample:
    at: float
    status: int | str
    latency: float
    signed_out: bool
    url: str = ""

    def overlaps(self, start: float, end: float) -> bool:
        return self.at <= end and self.at + self.latency >= start


@dataclass
class Report:
    samples: list[Sample] = field(default_factory=list)
    renewals: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, sample: Sample) -> None:
        with self.lock:
            self.samples.append(sample)


def is_sign_out(response: requests.Response) -> bool:
    location = response.headers.get("Location", "")
    return response.status_code == 401 or "/accounts/login/" in location


def fetch(session: requests.Session, url: str, started: float, report: Report):
    begin = time.monotonic()
    try:
        response = session.get(url, allow_redirects=False, timeout=30)
    except requests.RequestException as exc:
        report.add(
            Sample(begin - started, type(exc).__name__, time.monotonic() - begin, False, url)
        )
        return None
    report.add(
        Sample(
            begin - started, response.status_code, time.monotonic() - begin, is_sign_out(response)
        )
    )
    return response


def parallel(browser: requests.Session, urls: list[str], started: float, report: Report) -> list:
    """Send `urls` at once, each with a copy of the browser's cookies; return the responses."""
    answers: list = [None] * len(urls)

    def one(index: int) -> None:
        copy = requests.Session()
        copy.cookies.update(browser.cookies)
        answers[index] = fetch(copy, urls[index], started, report)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(urls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return answers


def virtual_user(user, base: str, started: float, deadline: float, report: Report, results: dict):
    rng = random.Random()
    browser = sign_in_as(base, user)
    refresh_tokens = {browser.cookies.get("refresh_token")}
    pages = PAGES[user.email]
    while time.monotonic() < deadline:
        if rng.random() < 0.3:
            # A page with several fetches: parallel requests, one cookie jar.
            urls = [f"{base}{rng.choice(pages)}" for _ in range(rng.randint(3, 6))]
            for answer in parallel(browser, urls, started, report):
                if answer is not None and answer.cookies.get("refresh_token"):
                    adopt_cookies(browser, answer)
                    break
        else:
            fetch(browser, f"{base}{rng.choice(pages)}", started, report)
        refresh_tokens.add(browser.cookies.get("refresh_token"))
        time.sleep(rng.uniform(0.1, 0.6))
    final = browser.get(f"{base}/dashboard/", allow_redirects=False, timeout=30)
    refresh_tokens.add(browser.cookies.get("refresh_token"))
    with report.lock:
        report.renewals += len(refresh_tokens - {None}) - 1
    results[user.email + str(id(browser))] = final.status_code == 200


def percentile(values: list[float], q: int) -> float:
    if len(values) < 2:
        return values[0] if values else 0.0
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def faults(app, api, started: float, seconds: float, pause: float, events: dict) -> None:
    time.sleep(seconds / 3)
    events["pause_start"] = time.monotonic() - started
    api.pause()
    time.sleep(pause)
    api.resume()
    events["pause_end"] = time.monotonic() - started
    time.sleep(max(0.0, seconds * 2 / 3 - (time.monotonic() - started)))
    victims = worker_pids(app.process.pid)
    if victims:
        os.kill(victims[0], signal.SIGKILL)
        events["worker_killed"] = time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=120)
    parser.add_argument("--access-ttl", type=int, default=5, help="access token lifetime (s)")
    parser.add_argument("--workers", type=int, default=4, help="gunicorn workers")
    parser.add_argument("--pause", type=float, default=6, help="seconds the API is frozen")
    parser.add_argument("--storage", choices=("auto", "postgres", "sqlite"), default="auto")
    args = parser.parse_args()

    with (
        tempfile.TemporaryDirectory(prefix="soak-") as tmp,
        shared_storage(args.storage, "soak") as (
            label,
            shared,
        ),
    ):
        workdir = Path(tmp)
        with (
            running_authapi(
                workdir,
                AUTHAPI_ACCESS_TTL=str(args.access_ttl),
                AUTHAPI_LOGIN_MAX_FAILURES_PER_IP="1000",
            ) as api,
            running_app(workdir, api_url=api.url, workers=args.workers, **shared) as app,
        ):
            print(
                f"soak: {args.users} users for {args.seconds:.0f}s, access TTL "
                f"{args.access_ttl}s, {args.workers} gunicorn workers, {label}",
                flush=True,
            )
            report, results, events = Report(), {}, {}
            before = api.stats()
            started = time.monotonic()
            deadline = started + args.seconds
            users = [ADMIN if i % 2 == 0 else EVALUATOR for i in range(args.users)]
            threads = [
                threading.Thread(
                    target=virtual_user, args=(u, app.url, started, deadline, report, results)
                )
                for u in users
            ]
            fault_thread = threading.Thread(
                target=faults, args=(app, api, started, args.seconds, args.pause, events)
            )
            for thread in [*threads, fault_thread]:
                thread.start()
            for thread in [*threads, fault_thread]:
                thread.join()
            after = api.stats()
            notable = [
                line
                for server in (app, api)
                for line in server.log().splitlines()
                if any(w in line for w in ("signing out", "Traceback", "ERROR", "Error", "reuse"))
            ]

    window = (events["pause_start"], events["pause_end"] + BACKEND_TIMEOUT + 1)
    statuses = Counter(str(s.status) for s in report.samples)
    five_xx = [s for s in report.samples if isinstance(s.status, int) and s.status >= 500]
    # A 5xx belongs to the pause when the request was in flight during it.
    outside = [s for s in five_xx if not s.overlaps(*window)]
    latencies = [s.latency * 1000 for s in report.samples if isinstance(s.status, int)]
    summary = {
        "users": args.users,
        "seconds": args.seconds,
        "access_ttl": args.access_ttl,
        "workers": args.workers,
        "storage": label,
        "requests": len(report.samples),
        "status_counts": dict(sorted(statuses.items())),
        "refresh_calls": after["refresh"] - before["refresh"],
        "token_renewals_seen_by_users": report.renewals,
        "access_token_lifetimes_elapsed": round(args.users * args.seconds / args.access_ttl),
        "reuse_detections": after["reuse_detected"] - before["reuse_detected"],
        "refresh_rejected": after["refresh_rejected"] - before["refresh_rejected"],
        "spurious_sign_outs": sum(s.signed_out for s in report.samples),
        "5xx_total": len(five_xx),
        "5xx_outside_pause_window": len(outside),
        "connection_errors": sum(not isinstance(s.status, int) for s in report.samples),
        "pause_window_s": [round(window[0], 1), round(window[1], 1)],
        "worker_killed_at_s": round(events.get("worker_killed", -1), 1),
        "signed_in_at_end": f"{sum(results.values())}/{len(results)}",
        "latency_ms": {
            "p50": round(percentile(latencies, 50), 1),
            "p95": round(percentile(latencies, 95), 1),
            "p99": round(percentile(latencies, 99), 1),
        },
    }
    bars = {
        "0 spurious sign-outs": summary["spurious_sign_outs"] == 0,
        "0 reuse detections": summary["reuse_detections"] == 0,
        "0 5xx outside the pause window": summary["5xx_outside_pause_window"] == 0,
        "every user signed in at the end": sum(results.values()) == len(results) == args.users,
    }
    print("\n| measure | value |\n|---|---|")
    for key, value in summary.items():
        print(f"| {key.replace('_', ' ')} | {value} |")
    print("\n| bar | met |\n|---|---|")
    for bar, met in bars.items():
        print(f"| {bar} | {'yes' if met else 'NO'} |")
    if notable:
        print(f"\nServer log lines worth a look ({len(notable)}; first 40):")
        print("\n".join(notable[:40]))
    for label_, picked in (
        ("first sign-outs", [s for s in report.samples if s.signed_out]),
        ("5xx outside the pause window", outside),
    ):
        for sample in sorted(picked, key=lambda s: s.at)[:5]:
            print(
                f"{label_}: at {sample.at:.2f}s for {sample.latency:.2f}s {sample.status} {sample.url}"
            )
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "soak.json").write_text(json.dumps({"summary": summary, "bars": bars}, indent=2))
    return 0 if all(bars.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
