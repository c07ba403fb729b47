"""Where a proxied request's time goes, measured inside one app process (see bench/README.md).

    python bench/proxy_breakdown.py --cookie 'sessionid=…; access_token=…' [--requests 1500]

bench/run.py runs it with the environment of the app server it benchmarks
(config.settings.bench, the same database, cache and API). It loads the
project's WSGI application, wraps the parts of the request path in timers
(each middleware, the session's load, the user's load, the database's
connection check and queries, the proxy view, the backend call and the wait
for the API's answer, logging) and sends `--requests` GET /api/users/me
through the handler as gunicorn would, one after another. Each timer counts
its own time only, not the timed parts it calls, so the parts add up to the
whole request. The figures are means over the fastest 90% of the requests
(by their whole time: the slowest tenth is where other processes on the
machine got in the way), in wall-clock and in this thread's CPU time.
Prints one JSON object.

`--profile N` prints cProfile's N costliest functions to stderr as well.
"""

import argparse
import cProfile
import functools
import io
import json
import logging
import pstats
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

HANDLER = "Django: WSGI handler (request and response objects, signals)"
API_ANSWER = "backend call: the API's answer (a direct call waits for it too)"
KEPT_SHARE = 0.9


class Timers:
    """Exclusive timers: each part's time without the timed parts it calls.

    Wall-clock time (what the caller waits) and this thread's CPU time (what
    the part computes; waiting for another process costs none).
    """

    def __init__(self):
        self.names: list[str] = []
        self.wall: dict[str, float] = defaultdict(float)
        self.cpu: dict[str, float] = defaultdict(float)
        self._inner: list[list[float]] = []

    def wrap(self, name: str, func):
        if name not in self.names:
            self.names.append(name)

        @functools.wraps(func)
        def timed(*args, **kwargs):
            wall, cpu = time.perf_counter(), time.thread_time()
            self._inner.append([0.0, 0.0])
            try:
                return func(*args, **kwargs)
            finally:
                wall, cpu = time.perf_counter() - wall, time.thread_time() - cpu
                inner_wall, inner_cpu = self._inner.pop()
                self.wall[name] += wall - inner_wall
                self.cpu[name] += cpu - inner_cpu
                if self._inner:
                    self._inner[-1][0] += wall
                    self._inner[-1][1] += cpu

        return timed

    def patch(self, owner, attribute: str, name: str) -> None:
        setattr(owner, attribute, self.wrap(name, getattr(owner, attribute)))

    def take(self) -> tuple[dict[str, float], dict[str, float]]:
        """Return this request's (wall, cpu) seconds per part and start the next."""
        taken = dict(self.wall), dict(self.cpu)
        self.wall, self.cpu = defaultdict(float), defaultdict(float)
        return taken


def instrument(timers: Timers):
    """Wrap the request path's parts in timers; return the timed WSGI application."""
    import django

    django.setup()
    import http.client

    from django.conf import settings
    from django.contrib import auth
    from django.core.handlers.base import BaseHandler
    from django.db import connections
    from django.db.backends import utils as db_utils
    from django.utils.module_loading import import_string
    from requests.adapters import HTTPAdapter

    from accounts import client as backend_client
    from accounts import proxy

    timers.names.append(HANDLER)
    for path in settings.MIDDLEWARE:
        cls = import_string(path)
        for attribute in ("__call__", "process_view"):
            if hasattr(cls, attribute):
                timers.patch(cls, attribute, f"middleware: {cls.__name__}")
    store = import_string(f"{settings.SESSION_ENGINE}.SessionStore")
    timers.patch(store, "load", "session: load (lookup, decode)")
    timers.patch(store, "save", "session: save")
    timers.patch(auth, "get_user", "user: load (auth.get_user)")
    timers.patch(
        type(connections["default"]),
        "close_if_health_check_failed",
        "database: connection check per request (CONN_HEALTH_CHECKS)",
    )
    for attribute in ("execute", "executemany"):
        timers.patch(db_utils.CursorWrapper, attribute, "database: queries (the round trips)")
    timers.patch(BaseHandler, "_get_response", "Django: URL resolving, view middleware calls")
    # Before config.urls is imported, so that the URLconf holds the timed view.
    timers.patch(proxy, "api_proxy", "proxy view: allow-list, body, headers, response")
    timers.patch(
        backend_client.AuthApiClient, "request", "backend call: the client (headers, reading)"
    )
    timers.patch(HTTPAdapter, "send", "backend call: requests' adapter and urllib3")
    timers.patch(http.client.HTTPConnection, "connect", "backend call: opening a connection")
    timers.patch(http.client.HTTPConnection, "getresponse", API_ANSWER)
    timers.patch(logging.Logger, "_log", "logging")
    from django.core.wsgi import get_wsgi_application

    return timers.wrap(HANDLER, get_wsgi_application())


def environ(cookie: str, path: str) -> dict:
    """A GET as gunicorn hands it to the application."""
    return {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "RAW_URI": path,
        "SCRIPT_NAME": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "HTTP_HOST": "127.0.0.1",
        "HTTP_COOKIE": cookie,
        "HTTP_ACCEPT": "*/*",
        "wsgi.input": io.BytesIO(b""),
        "wsgi.input_terminated": True,
        "wsgi.url_scheme": "http",
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
        "wsgi.version": (1, 0),
    }


def measure(application, timers: Timers, *, cookie: str, path: str, count: int) -> tuple:
    """Send `count` requests; return their statuses and per-request (wall, cpu) parts."""
    statuses, samples = [], []

    def start_response(status, headers, exc_info=None):
        statuses.append(int(status.split()[0]))

    for _ in range(count):
        result = application(environ(cookie, path), start_response)
        b"".join(result)
        result.close()  # request_finished, as gunicorn calls it
        samples.append(timers.take())
    return statuses, samples


def summary(timers: Timers, samples: list) -> dict:
    """Means per part over the fastest KEPT_SHARE of the requests, in milliseconds."""
    kept = sorted(samples, key=lambda sample: sum(sample[0].values()))
    kept = kept[: max(1, int(len(kept) * KEPT_SHARE))]

    def mean_ms(index: int, name: str) -> float:
        return 1000 * sum(sample[index].get(name, 0.0) for sample in kept) / len(kept)

    parts = [
        {"part": name, "wall_ms": mean_ms(0, name), "cpu_ms": mean_ms(1, name)}
        for name in timers.names
    ]
    groups: dict[str, dict] = {}
    for part in parts:
        name = "the API's answer" if part["part"] == API_ANSWER else part["part"].split(":")[0]
        group = groups.setdefault(name, {"group": name, "wall_ms": 0.0, "cpu_ms": 0.0})
        group["wall_ms"] += part["wall_ms"]
        group["cpu_ms"] += part["cpu_ms"]
    return {
        "parts": [p for p in parts if p["wall_ms"] >= 0.0005],
        "groups": [g for g in groups.values() if g["wall_ms"] >= 0.0005],
        "total_wall_ms": sum(p["wall_ms"] for p in parts),
        "total_cpu_ms": sum(p["cpu_ms"] for p in parts),
        "api_answer_wall_ms": mean_ms(0, API_ANSWER),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cookie", required=True, help="the signed-in browser's Cookie header")
    parser.add_argument("--path", default="/api/users/me")
    parser.add_argument("--requests", type=int, default=1500)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--profile", type=int, default=0, metavar="N")
    args = parser.parse_args()
    timers = Timers()
    application = instrument(timers)
    request = {"cookie": args.cookie, "path": args.path}
    measure(application, timers, **request, count=args.warmup)
    profiler = cProfile.Profile() if args.profile else None
    if profiler is not None:
        profiler.enable()
    statuses, samples = measure(application, timers, **request, count=args.requests)
    if profiler is not None:
        profiler.disable()
        for order in ("tottime", "cumtime"):
            pstats.Stats(profiler, stream=sys.stderr).sort_stats(order).print_stats(args.profile)
    result = {"requests": args.requests, "statuses": sorted(set(statuses)), "kept": KEPT_SHARE}
    print(json.dumps({**result, **summary(timers, samples)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
