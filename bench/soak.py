"""Soak with faults: virtual users browse through many token lifetimes while the
auth API is frozen for a while, answers refreshes slowly for a while, and a
gunicorn worker is killed.

    python bench/soak.py --users 50 --seconds 120      (or: make soak)

Starts the reference API and the app the way production runs it (production
settings over plain HTTP, `config.settings.bench`; gunicorn with --workers
processes x --threads threads), on PostgreSQL and Redis when they run on this
machine, else on SQLite and the database cache. Each virtual user has its own
cookie jar, signs in through the form and then clicks around, sometimes with a
burst of parallel requests the way a page with several fetches does.

The faults, at fixed shares of --seconds (see bench/README.md):

- freeze: the API is paused (SIGSTOP) for --pause seconds, then resumed;
- slow refresh: for --slow-seconds the API's refresh takes --slow-delay
  seconds (its runtime switch, POST /_faults);
- kill: one gunicorn worker gets SIGKILL (gunicorn starts another).

Access tokens live --access-ttl seconds (4 by default), so they fall due and
expire again and again inside the slow-refresh phase: a request that needs the
token waits for its refresh (at most AUTH_REFRESH_WAIT), while a page that
needs none is served from the session at once (SPEC §3, issue 21's bar:
throughput in that phase at least half the rest).

The whole scenario runs once per token storage mode (AUTH_TOKEN_STORAGE=cookies,
then =session, each on a fresh database and cache; --token-storage picks one),
and a comparison of the two follows the modes' tables. In session mode the
browser holds no token: renewals are counted at the API (its successful
refreshes), and a user is signed in when /dashboard/ answers 200.

Prints a table per mode and writes bench/results/soak.json; exits 1 if a bar
is missed in either mode:

    0 spurious sign-outs, 0 reuse detections, 0 5xx outside the fault windows,
    every user signed in at the end; inside the slow-refresh phase a throughput
    of at least half the rest of the run's and no request longer than the
    app's AUTH_REFRESH_WAIT + 1 s.

A sign-out that ends with the app's "We could not confirm your sign-in"
message (the outcome of a refresh could not be known) is counted apart, as a
clean unknown-outcome sign-out, and is allowed only when the killed worker
had a refresh call in flight: a refresh claim left pending in the shared cache
without its alive mark. Such a user signs in again, as the message asks, and
goes on. Every other sign-out is spurious.
"""

import argparse
import base64
import contextlib
import json
import os
import pickle
import random
import signal
import sqlite3
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

import redis
import requests

from accounts.conf import SETTINGS
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
DEFAULTS = {s.name: s.default for s in SETTINGS}
# What accounts/signout.py tells a user whose refresh had an unknowable outcome.
UNKNOWN_OUTCOME_TEXT = "We could not confirm your sign-in"
REFRESH_KEYS = "accounts:refresh:"
REFRESH_COOKIE = DEFAULTS["AUTH_REFRESH_COOKIE"]
SESSION_COOKIE = "sessionid"
# AUTH_TOKEN_STORAGE: tokens relayed as cookies, or sealed in the server-side session.
COOKIES, SESSION = "cookies", "session"
MODES = (COOKIES, SESSION)
# App log lines worth a look, and how to count them.
LOG_MARKS = {
    "session ended": "ended:",
    "refresh outcome unknown": "Refresh outcome unknown",
    "refresh owner died": "owner died",
    "backend failed transiently (kept session)": "failed transiently",
    "backend unavailable (503)": "Auth backend unavailable",
    "spent token of another session": "spent refresh token was presented",
    "refresh never reached the backend": "never reached the backend",
    "tracebacks": "Traceback",
    "worker timeouts / exits": "WORKER TIMEOUT",
}


@dataclass
class Sample:
    at: float
    status: int | str
    latency: float
    signed_out: bool
    url: str = ""
    user: int = -1

    @property
    def end(self) -> float:
        return self.at + self.latency

    def overlaps(self, start: float, end: float) -> bool:
        return self.at <= end and self.end >= start


@dataclass
class SignOut:
    user: int
    at: float
    kind: str  # "unknown_outcome" or "spurious"
    responses: int


@dataclass
class Report:
    samples: list[Sample] = field(default_factory=list)
    sign_outs: list[SignOut] = field(default_factory=list)
    renewals: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, sample: Sample) -> None:
        with self.lock:
            self.samples.append(sample)


def deletes_sign_in_cookie(response: requests.Response) -> bool:
    """Return whether the response deletes the refresh or the session cookie (the app ended
    the session; in session mode there is no refresh cookie to delete)."""
    return any(
        header.startswith((f"{REFRESH_COOKIE}=", f"{SESSION_COOKIE}="))
        and "max-age=0" in header.lower()
        for header in response.raw.headers.getlist("Set-Cookie")
    )


def is_sign_out(response: requests.Response) -> bool:
    location = response.headers.get("Location", "")
    return (
        response.status_code == 401
        or "/accounts/login/" in location
        or deletes_sign_in_cookie(response)
        or UNKNOWN_OUTCOME_TEXT in response.text
    )


def fetch(session: requests.Session, url: str, started: float, report: Report, user: int):
    begin = time.monotonic()
    try:
        response = session.get(url, allow_redirects=False, timeout=30)
    except requests.RequestException as exc:
        report.add(
            Sample(begin - started, type(exc).__name__, time.monotonic() - begin, False, url, user)
        )
        return None
    report.add(
        Sample(
            begin - started,
            response.status_code,
            time.monotonic() - begin,
            is_sign_out(response),
            url,
            user,
        )
    )
    return response


def parallel(browser, urls: list[str], started: float, report: Report, user: int) -> list:
    """Send `urls` at once, each with a copy of the browser's cookies; return the responses."""
    answers: list = [None] * len(urls)

    def one(index: int) -> None:
        copy = requests.Session()
        copy.cookies.update(browser.cookies)
        answers[index] = fetch(copy, urls[index], started, report, user)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(urls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return answers


def unknown_outcome_told(base: str, browser, answers: list) -> bool:
    """Return whether the app told this user it could not confirm their sign-in.

    The message is in a page the sign-out rendered, or in the `messages`
    cookie of a sign-out response, shown by the next page (the sign-in form).
    """
    if any(a is not None and UNKNOWN_OUTCOME_TEXT in a.text for a in answers):
        return True
    jar = requests.Session()
    jar.cookies.update(browser.cookies)
    for answer in answers:
        if answer is not None:
            jar.cookies.update(answer.cookies)
    with contextlib.suppress(requests.RequestException):
        return UNKNOWN_OUTCOME_TEXT in jar.get(f"{base}/accounts/login/", timeout=30).text
    return False


def renewals_seen(refresh_tokens: set) -> int:
    """Return how many renewals a browser saw: the refresh tokens it held, less the first.

    Only cookie mode hands the user tokens; in session mode the set holds
    only None and the API's counter stands in (see summarise).
    """
    return max(0, len(refresh_tokens - {None}) - 1)


def virtual_user(index, user, base, started, deadline, report: Report, results: dict, storage):
    rng = random.Random()
    browser = sign_in_as(base, user, storage=storage)
    refresh_tokens = {browser.cookies.get("refresh_token")}
    pages = PAGES[user.email]
    spurious = False
    while time.monotonic() < deadline:
        if rng.random() < 0.3:
            # A page with several fetches: parallel requests, one cookie jar.
            urls = [f"{base}{rng.choice(pages)}" for _ in range(rng.randint(3, 6))]
            answers = parallel(browser, urls, started, report, index)
            for answer in answers:
                if answer is not None and answer.cookies.get("refresh_token"):
                    adopt_cookies(browser, answer)
                    break
            for answer in answers:  # a message for the next page, a renewed session cookie
                for cookie in answer.cookies if answer is not None else ():
                    if cookie.name in ("messages", SESSION_COOKIE):
                        browser.cookies.set_cookie(cookie)
        else:
            answers = [fetch(browser, f"{base}{rng.choice(pages)}", started, report, index)]
        refresh_tokens.add(browser.cookies.get("refresh_token"))
        signed_out = [a for a in answers if a is not None and is_sign_out(a)]
        if signed_out and not spurious:
            at = time.monotonic() - started
            if unknown_outcome_told(base, browser, answers):
                with report.lock:
                    report.sign_outs.append(SignOut(index, at, "unknown_outcome", len(signed_out)))
                    report.renewals += renewals_seen(refresh_tokens)
                # The app asked them to sign in again: they do, and go on.
                browser = sign_in_as(base, user, storage=storage)
                refresh_tokens = {browser.cookies.get("refresh_token")}
            else:
                with report.lock:
                    report.sign_outs.append(SignOut(index, at, "spurious", len(signed_out)))
                spurious = True  # stays signed out: the end-of-run check sees it
        time.sleep(rng.uniform(0.1, 0.6))
    final = browser.get(f"{base}/dashboard/", allow_redirects=False, timeout=30)
    refresh_tokens.add(browser.cookies.get("refresh_token"))
    with report.lock:
        report.renewals += renewals_seen(refresh_tokens)
    results[index] = final.status_code == 200  # signed in: the page itself, not a cookie


def percentile(values: list[float], q: int) -> float:
    if len(values) < 2:
        return values[0] if values else 0.0
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


class RefreshClaims:
    """Read the app's refresh claims (accounts/refresh.py) straight from its shared cache."""

    def __init__(self, shared: dict, sqlite_path: Path):
        prefix = shared.get("CACHE_KEY_PREFIX", "tokenauth")
        self.pattern = f"{prefix}:1:{REFRESH_KEYS}"
        self.redis = redis.Redis.from_url(shared["REDIS_URL"]) if "REDIS_URL" in shared else None
        self.sqlite_path = sqlite_path

    def _entries(self) -> dict[str, object]:
        if self.redis is not None:
            found = {}
            for key in self.redis.scan_iter(match=f"{self.pattern}*", count=1000):
                raw = self.redis.get(key)
                if raw is not None:
                    with contextlib.suppress(Exception):
                        found[key.decode()] = pickle.loads(raw)  # noqa: S301 (our own cache)
            return found
        with contextlib.closing(sqlite3.connect(self.sqlite_path, timeout=10)) as db:
            rows = db.execute(
                "SELECT cache_key, value FROM django_cache WHERE cache_key LIKE ? AND expires > ?",
                (f"{self.pattern}%", time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())),
            ).fetchall()
        return {k: pickle.loads(base64.b64decode(v)) for k, v in rows}  # noqa: S301

    def finished(self) -> list[dict]:
        """Every finished refresh claim still kept: state, started_at, finished_at (epoch s)."""
        return [
            entry
            for key, entry in self._entries().items()
            if not key.endswith(":alive") and isinstance(entry, dict) and "finished_at" in entry
        ]

    def orphaned(self, before: float) -> set[str]:
        """Pending claims started before `before` (epoch s) whose alive mark has lapsed."""
        entries = self._entries()
        return {
            key
            for key, entry in entries.items()
            if not key.endswith(":alive")
            and isinstance(entry, dict)
            and entry.get("state") == "pending"
            and entry.get("started_at", 0) < before
            and f"{key}:alive" not in entries
        }


def faults(app, api, claims: RefreshClaims, started, args, events: dict) -> None:
    def at(share: float) -> None:
        time.sleep(max(0.0, started + args.seconds * share - time.monotonic()))

    at(0.25)
    events["pause_start"] = time.monotonic() - started
    api.pause()
    time.sleep(args.pause)
    api.resume()
    events["pause_end"] = time.monotonic() - started

    at(0.45)
    calls_before = api.stats()["refresh_calls"]
    api.set_faults(refresh_delay=args.slow_delay)
    events["slow_start"] = time.monotonic() - started
    time.sleep(args.slow_seconds)
    api.set_faults(refresh_delay=None)
    events["slow_end"] = time.monotonic() - started
    events["slow_refresh_calls"] = api.stats()["refresh_calls"] - calls_before

    at(0.8)
    victims = worker_pids(app.process.pid)
    if victims:
        os.kill(victims[0], signal.SIGKILL)
        killed_at = time.time()
        events["worker_killed"] = time.monotonic() - started
        # The killed worker's calls lose their alive marks within the lock TTL.
        time.sleep(args.lock_ttl + 2)
        events["orphaned_claims"] = claims.orphaned(killed_at)
        events["killed_epoch"] = killed_at


def log_counts(text: str) -> dict[str, int]:
    lines = text.splitlines()
    counts = {label: sum(mark in line for line in lines) for label, mark in LOG_MARKS.items()}
    reasons = Counter(
        line.rsplit("ended: ", 1)[1].strip() for line in lines if "Session of backend" in line
    )
    counts.update({f"session ended: {r}": n for r, n in sorted(reasons.items())})
    return counts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=30)
    parser.add_argument("--seconds", type=float, default=120, help="length of each mode's run")
    parser.add_argument(
        "--access-ttl",
        type=int,
        default=4,
        help="access token lifetime (s): short, so tokens expire during the slow phase",
    )
    parser.add_argument("--workers", type=int, default=4, help="gunicorn workers")
    parser.add_argument("--threads", type=int, default=4, help="gunicorn threads per worker")
    parser.add_argument("--pause", type=float, default=6, help="seconds the API is frozen")
    parser.add_argument(
        "--slow-seconds", type=float, default=12, help="length of the slow-refresh phase"
    )
    parser.add_argument(
        "--slow-delay", type=float, default=8, help="seconds each refresh takes in that phase"
    )
    parser.add_argument(
        "--refresh-wait",
        type=float,
        default=DEFAULTS["AUTH_REFRESH_WAIT"],
        help="the app's AUTH_REFRESH_WAIT (its default unless given)",
    )
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
        help="AUTH_TOKEN_STORAGE of the app: the whole run once per mode (both) or one",
    )
    parser.add_argument(
        "--app-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an extra setting for the app (repeatable), e.g. AUTH_REFRESH_POOL_SIZE=32",
    )
    args = parser.parse_args()
    args.lock_ttl = DEFAULTS["AUTH_REFRESH_LOCK_TTL"]
    modes = MODES if args.modes == "both" else (args.modes,)
    found = {}
    for mode in modes:
        print(f"\n## AUTH_TOKEN_STORAGE={mode}\n", flush=True)
        found[mode] = soak(args, storage=mode)
    output = {"modes": found}
    if len(modes) == 2:
        output["comparison"] = comparison(found)
        print("\n## Both modes\n")
        print_comparison(output["comparison"], found)
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "soak.json").write_text(json.dumps(output, indent=2))
    return 0 if all(all(run["bars"].values()) for run in found.values()) else 1


def soak(args, *, storage: str) -> dict:
    """Run the whole scenario with AUTH_TOKEN_STORAGE=`storage`; print it; return its
    summary and bars."""
    app_env = dict(item.split("=", 1) for item in args.app_env)
    backend_timeout = DEFAULTS["AUTH_BACKEND_TIMEOUT"]
    with (
        tempfile.TemporaryDirectory(prefix="soak-") as tmp,
        shared_storage(args.storage, "soak") as (label, shared),
    ):
        workdir = Path(tmp)
        (workdir / "api").mkdir()
        with (
            running_authapi(
                workdir / "api",
                AUTHAPI_ACCESS_TTL=str(args.access_ttl),
                AUTHAPI_LOGIN_MAX_FAILURES_PER_IP="1000",
            ) as api,
            running_app(
                workdir,
                api_url=api.url,
                workers=args.workers,
                gunicorn_args=("--threads", str(args.threads)),
                collectstatic=True,
                # Production settings over plain HTTP on loopback.
                DJANGO_SETTINGS_MODULE="config.settings.bench",
                SECRET_KEY="s" * 60,
                ALLOWED_HOSTS="127.0.0.1",
                AUTH_REFRESH_WAIT=f"{args.refresh_wait:g}",
                AUTH_BACKEND_TIMEOUT=f"{backend_timeout:g}",
                **{**shared, **app_env, "AUTH_TOKEN_STORAGE": storage},
            ) as app,
        ):
            print(
                f"soak: {args.users} users for {args.seconds:.0f}s, access TTL "
                f"{args.access_ttl}s, gunicorn {args.workers} workers x {args.threads} "
                f"threads, {label}, AUTH_TOKEN_STORAGE={storage}, "
                f"AUTH_REFRESH_WAIT {args.refresh_wait:g}s"
                + "".join(f", {k}={v}" for k, v in app_env.items()),
                flush=True,
            )
            claims = RefreshClaims(shared, workdir / "app.sqlite3")
            report, results, events = Report(), {}, {}
            before = api.stats()
            started, started_wall = time.monotonic(), time.time()
            deadline = started + args.seconds
            users = [ADMIN if i % 2 == 0 else EVALUATOR for i in range(args.users)]
            threads = [
                threading.Thread(
                    target=virtual_user,
                    args=(i, u, app.url, started, deadline, report, results, storage),
                )
                for i, u in enumerate(users)
            ]
            fault_thread = threading.Thread(
                target=faults, args=(app, api, claims, started, args, events)
            )
            for thread in [*threads, fault_thread]:
                thread.start()
            for thread in [*threads, fault_thread]:
                thread.join()
            after = api.stats()
            if "killed_epoch" in events:  # a second look: claims orphaned later on
                events["orphaned_claims"] |= claims.orphaned(events["killed_epoch"])
            events["finished_claims"] = [
                {**e, "at": e["started_at"] - started_wall} for e in claims.finished()
            ]
            app_log, api_log = app.log(), api.log()

    notable = [
        line
        for text in (app_log, api_log)
        for line in text.splitlines()
        if any(w in line for w in ("Traceback", "ERROR", "Error", "reuse", "WARNING", "WORKER"))
    ]
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    # The servers' logs, for evidence (bench/results/ is not committed).
    (out / f"soak-app-{storage}.log").write_text(app_log)
    (out / f"soak-api-{storage}.log").write_text(api_log)

    summary, bars = summarise(
        args, label, storage, report, results, events, before, after, backend_timeout
    )
    summary["app_log"] = log_counts(app_log)
    print("\n| measure | value |\n|---|---|")
    for key, value in summary.items():
        if key != "app_log":
            print(f"| {key.replace('_', ' ')} | {value} |")
    print("\n| app log | lines |\n|---|---|")
    for key, value in summary["app_log"].items():
        print(f"| {key} | {value} |")
    print(f"\n| bar ({storage} mode) | met |\n|---|---|")
    for bar, met in bars.items():
        print(f"| {bar} | {'yes' if met else 'NO'} |")
    if not all(bars.values()):
        # A missed bar's evidence outlives the next run, which overwrites the logs above.
        stamp = time.strftime("%Y%m%d-%H%M%S")
        for name, text in (("app", app_log), ("api", api_log)):
            kept = out / f"soak-{name}-{storage}-missed-{stamp}.log"
            kept.write_text(text)
        print(f"\nA bar was missed: the servers' logs are kept as bench/results/soak-*-{stamp}.log")
    print(f"\n{summary['unknown_outcome_note']}")
    if notable:
        print(f"\nServer log lines worth a look ({len(notable)}; first 40):")
        print("\n".join(notable[:40]))
    windows = fault_windows(args, events, backend_timeout)
    outside = [
        s
        for s in report.samples
        if isinstance(s.status, int)
        and s.status >= 500
        and not any(s.overlaps(*w) for w in windows.values())
    ]
    for event in sorted(report.sign_outs, key=lambda o: o.at)[:10]:
        print(
            f"sign-out event: user {event.user} at {event.at:.2f}s, {event.kind}, "
            f"{event.responses} response(s)"
        )
    for label_, picked in (
        ("sign-out", [s for s in report.samples if s.signed_out]),
        ("5xx outside the fault windows", outside),
    ):
        for sample in sorted(picked, key=lambda s: s.at)[:5]:
            print(
                f"{label_}: user {sample.user} at {sample.at:.2f}s for {sample.latency:.2f}s "
                f"{sample.status} {sample.url}"
            )
    slow_start, slow_end = windows["slow"]
    slowest = sorted(
        (s for s in report.samples if slow_start <= s.at <= slow_end),
        key=lambda s: -s.latency,
    )
    for sample in slowest[:5]:
        print(
            f"slowest in the slow phase: user {sample.user} at {sample.at:.2f}s for "
            f"{sample.latency:.2f}s {sample.status} {sample.url}"
        )
    return {"summary": summary, "bars": bars}


def comparison(found: dict) -> dict:
    """The two modes' figures that matter side by side, and session / cookies where a ratio
    means something."""
    c, s = found[COOKIES]["summary"], found[SESSION]["summary"]
    return {
        "steady_throughput_ratio": round(s["steady_throughput_rps"] / c["steady_throughput_rps"], 3)
        if c["steady_throughput_rps"]
        else None,
        "refresh_calls_per_renewal": {
            mode: found[mode]["summary"]["refresh_calls_per_renewal"] for mode in MODES
        },
        "latency_ms": {mode: found[mode]["summary"]["latency_ms"] for mode in MODES},
        "reuse_detections": {mode: found[mode]["summary"]["reuse_detections"] for mode in MODES},
        "spurious_sign_outs": {
            mode: found[mode]["summary"]["spurious_sign_outs"] for mode in MODES
        },
        "bars_met": {
            mode: f"{sum(found[mode]['bars'].values())}/{len(found[mode]['bars'])}"
            for mode in MODES
        },
    }


def print_comparison(compared: dict, found: dict) -> None:
    c, s = found[COOKIES]["summary"], found[SESSION]["summary"]

    def latency(summary: dict) -> str:
        lat = summary["latency_ms"]
        return f"{lat['p50']} / {lat['p95']} / {lat['max']} ms"

    def steady(summary: dict) -> str:
        lat = summary["latency_outside_fault_windows_ms"]
        return f"{lat['p50']} / {lat['p99']} ms"

    def calls(summary: dict) -> str:
        return (
            f"{summary['refresh_calls_per_renewal']} ({summary['refresh_calls_reaching_the_api']}"
            f" calls / {summary['token_renewals_seen_by_users']} renewals)"
        )

    ratio = compared["steady_throughput_ratio"]
    rows = [
        (
            "warm-path throughput: requests outside the fault windows per second",
            c["steady_throughput_rps"],
            s["steady_throughput_rps"],
            f"{ratio:.3f}" if ratio is not None else "",
        ),
        ("refresh calls reaching the API per renewal", calls(c), calls(s), ""),
        ("latency p50 / p95 / max (whole run)", latency(c), latency(s), ""),
        ("latency outside the fault windows p50 / p99", steady(c), steady(s), ""),
        (
            "slow phase: throughput ratio to the rest",
            *(f"{m['throughput_rps']['ratio']}" for m in (c, s)),
            "",
        ),
        (
            "slow phase: longest request",
            *(f"{m['slow_phase_latency_ms']['max']} ms" for m in (c, s)),
            "",
        ),
        ("reuse detections", c["reuse_detections"], s["reuse_detections"], ""),
        ("spurious sign-outs", c["spurious_sign_outs"], s["spurious_sign_outs"], ""),
        ("users signed in at the end", c["signed_in_at_end"], s["signed_in_at_end"], ""),
        ("bars met", *compared["bars_met"].values(), ""),
    ]
    print("| measure | cookies | session | session / cookies |\n|---|---|---|---|")
    for measure, *cells in rows:
        print(f"| {measure} | " + " | ".join(str(cell) for cell in cells) + " |")
    print(
        "\nRenewals: in cookie mode the refresh tokens users received; in session mode the "
        "API's successful refreshes (the browser holds no token)."
    )


def fault_windows(args, events: dict, backend_timeout: float) -> dict[str, tuple[float, float]]:
    """Where each fault acts, in seconds from the start, with its tail.

    The freeze: the pause, then the app's backend timeout for calls that were
    already waiting. The slow phase: its length, then one more delay for the
    refreshes started at its very end. The kill: the lock TTL, then a second.
    """
    windows = {}
    if "pause_start" in events:
        windows["freeze"] = (events["pause_start"], events["pause_end"] + backend_timeout + 1)
    if "slow_start" in events:
        windows["slow"] = (events["slow_start"], events["slow_end"] + args.slow_delay)
    if "worker_killed" in events:
        killed = events["worker_killed"]
        windows["kill"] = (killed, killed + args.lock_ttl + 1)
    return windows


def outside_windows_seconds(windows: dict, first: float, last: float) -> float:
    """Return how many seconds of [first, last] no fault window covers."""
    covered, reach = 0.0, first
    for start, end in sorted(windows.values()):
        start, end = max(start, reach), min(end, last)
        if end > start:
            covered += end - start
            reach = end
    return max(1e-9, (last - first) - covered)


def summarise(
    args, label, storage, report: Report, results, events, before, after, backend_timeout
):
    windows = fault_windows(args, events, backend_timeout)
    samples = report.samples
    statuses = Counter(str(s.status) for s in samples)
    five_xx = [s for s in samples if isinstance(s.status, int) and s.status >= 500]
    outside = [s for s in five_xx if not any(s.overlaps(*w) for w in windows.values())]
    latencies = [s.latency * 1000 for s in samples if isinstance(s.status, int)]

    # Throughput: requests completed inside the slow window against the rest.
    first = min(s.at for s in samples)
    last = max(s.end for s in samples)
    slow_start, slow_end = windows["slow"]
    inside = [s for s in samples if slow_start <= s.end <= slow_end]
    rest = [s for s in samples if not slow_start <= s.end <= slow_end]
    inside_rps = len(inside) / (slow_end - slow_start)
    rest_rps = len(rest) / max(1e-9, (last - first) - (slow_end - slow_start))
    started_inside = [
        s for s in samples if slow_start <= s.at <= slow_end and isinstance(s.status, int)
    ]
    slow_max = max((s.latency for s in started_inside), default=0.0)
    steady = [s for s in samples if not any(s.overlaps(*w) for w in windows.values())]
    steady_rps = len(steady) / outside_windows_seconds(windows, first, last)

    # How long each refresh took from claim to outcome (accounts/refresh.py keeps
    # both times): beyond the backend's own delay, the call sat in the refresh pool.
    calls = events.get("finished_claims", [])
    in_phase = [c for c in calls if slow_start <= c["at"] <= events.get("slow_end", slow_end)]
    took = [c["finished_at"] - c["started_at"] for c in in_phase]
    outside_took = [c["finished_at"] - c["started_at"] for c in calls if c not in in_phase]

    unknown = [o for o in report.sign_outs if o.kind == "unknown_outcome"]
    spurious = [o for o in report.sign_outs if o.kind == "spurious"]
    orphans = events.get("orphaned_claims", set())
    killed = events.get("worker_killed")
    unknown_allowed = not unknown or (
        killed is not None and len(orphans) >= len(unknown) and all(o.at >= killed for o in unknown)
    )
    if not unknown:
        note = (
            "Clean unknown-outcome sign-outs: 0. (Allowed only when the killed worker had a "
            f"refresh call in flight; it had {len(orphans)} at {killed or -1:.1f}s.)"
        )
    elif unknown_allowed:
        note = (
            f"Clean unknown-outcome sign-outs: {len(unknown)}, all after the worker was killed "
            f"at {killed:.1f}s with {len(orphans)} refresh call(s) in flight (claims left "
            "pending without an alive mark): allowed, the app could not know whether the "
            "backend had spent those refresh tokens."
        )
    else:
        note = (
            f"Clean unknown-outcome sign-outs: {len(unknown)}, but the killed worker had only "
            f"{len(orphans)} refresh call(s) in flight (or they came before the kill): "
            "counted as spurious."
        )
    spurious_events = len(spurious) + (0 if unknown_allowed else len(unknown))
    spurious_responses = sum(s.signed_out for s in samples) - (
        sum(o.responses for o in unknown) if unknown_allowed else 0
    )
    refreshed = after["refresh"] - before["refresh"]
    calls_made = after["refresh_calls"] - before["refresh_calls"]
    # Only cookie mode hands users their tokens; in session mode the browser
    # sees no renewal, so the API's successful refreshes stand in.
    renewals = report.renewals if storage == COOKIES else refreshed
    summary = {
        "token_storage": storage,
        "users": args.users,
        "seconds": args.seconds,
        "access_ttl": args.access_ttl,
        "gunicorn": f"{args.workers} workers x {args.threads} threads",
        "storage": label,
        "requests": len(samples),
        "status_counts": dict(sorted(statuses.items())),
        "refresh_calls": refreshed,
        "refresh_calls_reaching_the_api": calls_made,
        "refresh_calls_slowed_by_the_phase": events.get("slow_refresh_calls", 0),
        "token_renewals_seen_by_users": renewals,
        "renewals_counted": (
            "refresh tokens the users received"
            if storage == COOKIES
            else "at the API: successful refreshes (the browser holds no token)"
        ),
        "refresh_calls_per_renewal": round(calls_made / renewals, 3) if renewals else None,
        "reuse_detections": after["reuse_detected"] - before["reuse_detected"],
        "refresh_rejected": after["refresh_rejected"] - before["refresh_rejected"],
        "spurious_sign_outs": spurious_events,
        "spurious_sign_out_responses": spurious_responses,
        "clean_unknown_outcome_sign_outs": len(unknown),
        "refresh_calls_in_flight_in_killed_worker": len(orphans),
        "refresh_claim_to_outcome_s": {
            "slow_phase_max": round(max(took, default=0.0), 2),
            f"slow_phase_over_{args.slow_delay + 1:g}s": sum(t > args.slow_delay + 1 for t in took),
            "rest_max": round(max(outside_took, default=0.0), 2),
        },
        "5xx_total": len(five_xx),
        "5xx_by_window": {
            name: sum(s.overlaps(*w) for s in five_xx) for name, w in windows.items()
        },
        "5xx_outside_fault_windows": len(outside),
        "connection_errors": sum(not isinstance(s.status, int) for s in samples),
        "fault_windows_s": {k: [round(a, 1), round(b, 1)] for k, (a, b) in windows.items()},
        "signed_in_at_end": f"{sum(results.values())}/{len(results)}",
        "throughput_rps": {
            "slow_phase": round(inside_rps, 1),
            "rest_of_run": round(rest_rps, 1),
            "ratio": round(inside_rps / rest_rps, 2) if rest_rps else 0.0,
        },
        "slow_phase_latency_ms": {
            "p50": round(percentile([s.latency * 1000 for s in started_inside], 50), 1),
            "p99": round(percentile([s.latency * 1000 for s in started_inside], 99), 1),
            "max": round(slow_max * 1000, 1),
        },
        "latency_ms": {
            "p50": round(percentile(latencies, 50), 1),
            "p95": round(percentile(latencies, 95), 1),
            "p99": round(percentile(latencies, 99), 1),
            "max": round(max(latencies, default=0.0), 1),
        },
        "steady_throughput_rps": round(steady_rps, 1),
        "latency_outside_fault_windows_ms": {
            "p50": round(percentile([s.latency * 1000 for s in steady], 50), 1),
            "p99": round(percentile([s.latency * 1000 for s in steady], 99), 1),
        },
        "unknown_outcome_note": note,
    }
    bars = {
        "0 spurious sign-outs": spurious_events == 0,
        "0 reuse detections": summary["reuse_detections"] == 0,
        "0 5xx outside the fault windows": not outside,
        "every user signed in at the end": sum(results.values()) == len(results) == args.users,
        "slow phase: throughput >= 0.5 x rest of run": inside_rps >= 0.5 * rest_rps,
        f"slow phase: no request over AUTH_REFRESH_WAIT + 1 s ({args.refresh_wait + 1:g} s)": (
            slow_max <= args.refresh_wait + 1
        ),
    }
    return summary, bars


if __name__ == "__main__":
    sys.exit(main())
