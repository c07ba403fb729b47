"""The project's server run several ways, side by side with the seed (see bench/README.md, (h)).

    python bench/workers.py shipped workers5+threads4+recycle2000    # before issue 23
    python bench/workers.py shipped sync --path /dashboard/ --token-storage session

Starts one reference API (one-hour access tokens), the seed's Next.js app
(bench/seed.py) and one project server per configuration named, all on the
same PostgreSQL and Redis as bench/run.py's (h), signs in to each, and runs
`--path` on every project server and the seed's equivalent (its `/api/me` for
the proxy, its `/bench` page for `/dashboard/`) in ABAB rounds with wrk:
p50 at 1 connection, requests/s at 16 and each server's CPU per request from
/proc (bench/seed.py's `measure`). Prints each arm and its ratio to the seed.

Configurations (gunicorn.conf.py is read by each; these change one thing):
`shipped` (as it ships: cores + 1 gthread workers of 8 threads, each replaced
after about 25,000 requests), `recycle2000` (replaced after about 2,000, as
before issue 23), `sync` (GUNICORN_THREADS=1: sync workers, one request at a
time each, no keep-alive), `threads4`, `threads16` (threads per worker),
`workers2`, `workers5` (2 × cores + 1 here, the default before issue 23),
`gevent` (gevent workers, 100 connections each; needs `pip install gevent`,
skipped with a line without it). Each thread of each server keeps its own
PostgreSQL connection: mind `max_connections` (100 here) when naming many.
"""

import argparse
import contextlib
import importlib.util
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import run, seed  # noqa: E402
from tests.flows import ADMIN  # noqa: E402
from tests.servers import running_app, running_authapi, shared_storage  # noqa: E402

CONFIGURATIONS: dict[str, tuple[tuple[str, ...], dict[str, str]]] = {
    "shipped": ((), {}),
    "recycle2000": (("--max-requests", "2000", "--max-requests-jitter", "200"), {}),
    "sync": ((), {"GUNICORN_THREADS": "1"}),
    "threads4": ((), {"GUNICORN_THREADS": "4"}),
    "threads16": ((), {"GUNICORN_THREADS": "16"}),
    "workers2": (("--workers", "2"), {}),
    "workers5": (("--workers", "5"), {}),
    "gevent": (("--worker-class", "gevent", "--worker-connections", "100"), {}),
}
SEED_EQUIVALENT = {"/api/users/me": "/api/me", "/dashboard/": "/bench"}


def configuration(name: str) -> str:
    unknown = [part for part in name.split("+") if part not in CONFIGURATIONS]
    if unknown:
        raise argparse.ArgumentTypeError(f"no configuration {', '.join(unknown)}")
    return name


def combined(name: str) -> tuple[tuple[str, ...], dict[str, str]]:
    """The gunicorn arguments and environment of `name`'s parts together."""
    gunicorn_args: tuple[str, ...] = ()
    env: dict[str, str] = {}
    for part in name.split("+"):
        more_args, more_env = CONFIGURATIONS[part]
        gunicorn_args += more_args
        env.update(more_env)
    return gunicorn_args, env


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "configurations",
        nargs="*",
        type=configuration,
        help=f"any of {', '.join(CONFIGURATIONS)}, or several joined by + (no_recycle+threads8)",
    )
    parser.add_argument("--path", default="/api/users/me", choices=sorted(SEED_EQUIVALENT))
    parser.add_argument("--token-storage", default="cookies", choices=("cookies", "session"))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5)
    args = parser.parse_args()
    names = args.configurations or list(CONFIGURATIONS)
    if importlib.util.find_spec("gevent") is None:
        for name in [name for name in names if "gevent" in name.split("+")]:
            print(f"workers: {name} skipped, gevent is not installed (pip install gevent)")
            names.remove(name)
    reason = seed.missing()
    if reason:
        sys.exit(f"workers: {reason}")
    run.ensure_wrk()
    folder = seed.build()
    mode = args.token_storage
    workers = run.SHIPPED_WORKERS
    with (
        tempfile.TemporaryDirectory(prefix="workers-") as tmp,
        shared_storage("auto", "bench") as (label, shared),
        contextlib.ExitStack() as servers,
    ):
        work = Path(tmp)
        (work / "api").mkdir()
        api = servers.enter_context(running_authapi(work / "api", AUTHAPI_ACCESS_TTL="3600"))
        peer = servers.enter_context(seed.running(folder, api.url, work / "seed.log"))
        common = {**run.shipped_env(shared), "AUTH_TOKEN_STORAGE": mode}
        arms = {}
        seed_cookie = seed.cookie_header(seed.sign_in(peer.url, ADMIN.email, ADMIN.password))
        arms["seed"] = (peer.url + SEED_EQUIVALENT[args.path], seed_cookie, peer.process.pid)
        for name in names:
            gunicorn_args, env = combined(name)
            app = servers.enter_context(
                running_app(
                    work,
                    api_url=api.url,
                    workers=workers,
                    name=name,
                    database="shipped",
                    gunicorn_args=gunicorn_args,
                    **common,
                    **env,
                )
            )
            arms[name] = (app.url + args.path, app, app.process.pid)
        # After every server has started: each one's migrate may end sessions made before it.
        for name in names:
            url, app, pid = arms[name]
            arms[name] = (url, run.cookie_header(run.sign_in_mode(app.url, mode)), pid)
        print(f"workers: {label}, {mode}, {args.path}, {run.load_average()}", flush=True)
        print({name: url for name, (url, _, _) in arms.items()}, flush=True)
        found = seed.measure(arms, rounds=args.rounds, seconds=args.seconds, wrk=run.wrk)
    base = found["seed"]
    print(f"| {args.path} [{mode}] | p50 ms | req/s (16) | CPU ms/req | req/s / seed's |")
    print("|---|---|---|---|---|")
    for arm, figures in found.items():
        print(
            f"| {arm} | {figures['p50_ms']:.2f} | {figures['rps']:.0f} | "
            f"{figures['cpu_ms']:.2f} | {figures['rps'] / base['rps']:.3f} |"
        )
    print(f"after: {run.load_average()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
