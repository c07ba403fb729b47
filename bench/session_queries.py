"""The database statements and CPU of one warm signed-in page, inside one app process.

    python bench/session_queries.py --cookie 'sessionid=…' [--path /dashboard/] [--requests 500]

bench/run.py runs it for (g) with the environment of an app server of one
SESSION_ENGINE (config.settings.bench, the same database, cache and API). It
loads the project's WSGI application, sends `--warmup` and then `--requests`
GETs of `--path` through the handler as gunicorn would, one after another,
and counts every statement the app sends (`connection.execute_wrapper`: the
per-request connection check is not one). Prints one JSON object: statements
per request, by kind ("SELECT accounts_session JOIN accounts_user"), and the
mean CPU of a request (this thread's) over the fastest 90% of them.
"""

import argparse
import json
import re
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.proxy_breakdown import KEPT_SHARE, environ  # noqa: E402

TABLE = r'"?(\w+)"?'


def kind(sql: str) -> str:
    """Return a statement's verb and tables: 'SELECT accounts_session JOIN accounts_user'."""
    verb = sql.split(None, 1)[0].upper()
    target = re.search(rf"\b(?:FROM|UPDATE|INTO)\s+{TABLE}", sql, re.I)
    joins = re.findall(rf"\bJOIN\s+{TABLE}", sql, re.I)
    return " ".join([verb, *(target.groups() if target else ()), *(f"JOIN {t}" for t in joins)])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cookie", required=True, help="the signed-in browser's Cookie header")
    parser.add_argument("--path", default="/dashboard/")
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--warmup", type=int, default=100)
    args = parser.parse_args()
    import django

    django.setup()
    from django.conf import settings
    from django.core.wsgi import get_wsgi_application
    from django.db import connection

    application = get_wsgi_application()
    statements: Counter = Counter()
    statuses: set[int] = set()
    cpu: list[float] = []

    def count(execute, sql, params, many, context):
        statements[kind(sql)] += 1
        return execute(sql, params, many, context)

    def start_response(status, headers, exc_info=None):
        statuses.add(int(status.split()[0]))

    def send() -> None:
        result = application(environ(args.cookie, args.path), start_response)
        b"".join(result)
        result.close()  # request_finished, as gunicorn calls it

    for _ in range(args.warmup):
        send()
    with connection.execute_wrapper(count):
        for _ in range(args.requests):
            started = time.thread_time()
            send()
            cpu.append(time.thread_time() - started)
    kept = sorted(cpu)[: max(1, int(len(cpu) * KEPT_SHARE))]
    print(
        json.dumps(
            {
                "engine": settings.SESSION_ENGINE,
                "requests": args.requests,
                "statuses": sorted(statuses),
                "queries_per_request": sum(statements.values()) / args.requests,
                "statements_per_request": {
                    k: n / args.requests for k, n in statements.most_common()
                },
                "cpu_ms": 1000 * sum(kept) / len(kept),
                "kept": KEPT_SHARE,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
