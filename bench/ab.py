"""A cut's gain, measured in one app process with a paired A/B (see bench/README.md, (h)).

    python bench/ab.py base timeline_every            # the timeline flushed after every request
    python bench/ab.py --path /dashboard/ base orm_sessions
    python bench/ab.py --token-storage session base csp_django

Starts the reference API (one-hour access tokens) and one app server (to sign
in, as bench/run.py does), then, in a process with that server's
environment, sends `--path` through the project's WSGI handler as gunicorn
would (bench/proxy_breakdown.py's request), in alternate blocks of 300 per
variant, `--rounds` rounds in ABBA order, and prints each variant's median
thread CPU per request and its ratio to the first. A variant switches one
thing on for its blocks and back off after: the machine's drift falls on
every variant alike.

Variants: `base` (the code as it is), `timeline_every` (the health timeline
flushed after every request, as before issue 23), `csp_django` (django-csp's
middleware building the site's policy for every response), `orm_sessions`
(the session read through the ORM, accounts/sessions.py, where the demo's
store, accounts/sessions_raw.py, writes it by hand).
"""

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

BLOCK = 300


def timeline_every():
    from accounts.ops import timeline

    buffer = timeline._buffer
    buffer.flush_if_due = buffer.flush
    return lambda: delattr(buffer, "flush_if_due")


def csp_django():
    from csp.middleware import CSPMiddleware as Theirs

    from accounts import csp

    ours = csp.CSPMiddleware.process_response
    csp.CSPMiddleware.process_response = Theirs.process_response
    return lambda: setattr(csp.CSPMiddleware, "process_response", ours)


def orm_sessions():
    from accounts import sessions, sessions_raw

    ours = sessions_raw.SessionStore.load
    sessions_raw.SessionStore.load = sessions.SessionStore.load
    return lambda: setattr(sessions_raw.SessionStore, "load", ours)


VARIANTS = {
    "base": lambda: (lambda: None),
    "timeline_every": timeline_every,
    "csp_django": csp_django,
    "orm_sessions": orm_sessions,
}


def inside(cookie: str, path: str, rounds: int, variants: list[str], profile: int = 0) -> None:
    """In the app's environment: the paired rounds, printed."""
    import django

    django.setup()
    from django.core.wsgi import get_wsgi_application

    from bench.proxy_breakdown import environ

    application = get_wsgi_application()

    def one() -> str:
        statuses = []
        result = application(environ(cookie, path), lambda s, h, e=None: statuses.append(s))
        b"".join(result)
        result.close()
        return statuses[0]

    for _ in range(BLOCK):
        status = one()
        if not status.startswith("200"):
            sys.exit(f"{path} answered {status}")
    if profile:
        import cProfile
        import pstats

        profiler = cProfile.Profile(time.thread_time)  # CPU, not waiting
        profiler.enable()
        for _ in range(BLOCK):
            one()
        profiler.disable()
        pstats.Stats(profiler, stream=sys.stderr).sort_stats("tottime").print_stats(profile)
    cpu: dict[str, list[float]] = {v: [] for v in variants}
    for index in range(rounds):
        for variant in variants if index % 2 == 0 else variants[::-1]:
            undo = VARIANTS[variant]()
            for _ in range(20):
                one()
            start = time.thread_time()
            for _ in range(BLOCK):
                one()
            cpu[variant].append(1000 * (time.thread_time() - start) / BLOCK)
            undo()
    first = statistics.median(cpu[variants[0]])
    for variant in variants:
        median = statistics.median(cpu[variant])
        rounds_ms = ", ".join(f"{ms:.2f}" for ms in cpu[variant])
        print(
            f"{path} {variant:16} {median:.3f} ms CPU ({median / first:.3f})  rounds {rounds_ms}"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("variants", nargs="+", choices=sorted(VARIANTS))
    parser.add_argument("--path", default="/api/users/me")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--token-storage", default="cookies", choices=("cookies", "session"))
    parser.add_argument(
        "--profile", type=int, default=0, metavar="N", help="print cProfile's N costliest functions"
    )
    parser.add_argument("--inside", metavar="COOKIE", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inside is not None:
        inside(args.inside, args.path, args.rounds, args.variants, args.profile)
        return 0

    from bench import run
    from tests.servers import running_app, running_authapi, shared_storage

    mode = args.token_storage
    with (
        tempfile.TemporaryDirectory(prefix="ab-") as tmp,
        shared_storage("auto", "bench") as (_, shared),
    ):
        work = Path(tmp)
        (work / "api").mkdir()
        common = {**run.shipped_env(shared), "AUTH_TOKEN_STORAGE": mode}
        with (
            running_authapi(work / "api", AUTHAPI_ACCESS_TTL="3600") as api,
            running_app(work, api_url=api.url, workers=1, name="ab", **common) as app,
        ):
            cookie = run.cookie_header(run.sign_in_mode(app.url, mode))
            env = run.app_environment(work, api.url, common, name="ab")
            command = [sys.executable, __file__, "--inside", cookie, "--path", args.path]
            command += ["--rounds", str(args.rounds), "--profile", str(args.profile)]
            command += args.variants
            return subprocess.run(command, env=env, cwd=ROOT).returncode


if __name__ == "__main__":
    sys.exit(main())
