"""gunicorn settings for production: `gunicorn config.wsgi` reads this file from the project root.

Everything comes from the environment so one image serves every box:

    GUNICORN_BIND          address to listen on (default 127.0.0.1:8000;
                           0.0.0.0:8000 behind a balancer)
    WEB_CONCURRENCY        worker processes (default CPU cores + 1)
    GUNICORN_THREADS       threads per worker (default 8): a request waiting for a
                           token refresh (up to AUTH_REFRESH_WAIT) does not hold a whole process;
                           each worker's app reads the count it runs (sign-in takes at most
                           half of them, AUTH_LOGIN_CONCURRENCY)
    GUNICORN_TIMEOUT       seconds before a stuck worker is replaced (default 30)
    GUNICORN_MAX_REQUESTS  requests a worker serves before it is replaced, give or take
                           a tenth (default 25000; 0 never): a bound on a slow leak. Each
                           replacement boots Django again (about half a CPU second) and
                           opens new database connections: at 2,000 it cost a tenth of
                           a proxied call's CPU (bench/README.md, "(h) Side by side")
    FORWARDED_ALLOW_IPS    proxies whose X-Forwarded-* headers are trusted (default 127.0.0.1,::1)
    PROMETHEUS_MULTIPROC_DIR  where the workers keep their metrics (default: a new
                           temporary directory per master, removed when it exits)

Every worker counts into PROMETHEUS_MULTIPROC_DIR, so a scrape of `/metrics`
(accounts/ops/metrics.py) at any worker sees the whole server. The directory is
set here, before any worker imports prometheus-client, which picks its
storage at import.
"""

import multiprocessing
import os
import shutil
import tempfile

bind = os.environ.get("GUNICORN_BIND", "127.0.0.1:8000")
# Fewer processes, more threads: most of a request is waiting for the backend or the
# database. Against 2 × cores + 1 workers of 4 threads, this served 22% more proxied
# calls at 16 connections for a quarter less CPU each, and the same signed-in pages
# (bench/workers.py; bench/README.md, "(h) Side by side"). Database connections:
# workers × threads per server, as before (24 against 20 on 2 cores).
workers = int(os.environ.get("WEB_CONCURRENCY", multiprocessing.cpu_count() + 1))
threads = int(os.environ.get("GUNICORN_THREADS", "8"))
worker_class = "gthread" if threads > 1 else "sync"
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "30"))
graceful_timeout = 10
keepalive = 5
# Recycle workers now and then so a slow leak can never take a box down.
max_requests = int(os.environ.get("GUNICORN_MAX_REQUESTS", "25000"))
max_requests_jitter = max_requests // 10
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1,::1")
accesslog = "-"
# gunicorn's combined format, then the request's id (the X-Request-ID response header,
# accounts/requestid.py): an access line and the app's log lines of a request correlate.
access_log_format = (
    '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s" %({x-request-id}o)s'
)
errorlog = "-"
# Several gunicorn masters may run on one host (one per port): no shared control socket.
control_socket_disable = True

# Each master gets a directory of its own unless one is given: stale files
# of an earlier run would be counted again.
_own_metrics_dir = None
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    _own_metrics_dir = tempfile.mkdtemp(prefix="prometheus-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = _own_metrics_dir


def post_fork(server, worker):
    # The app sizes what it bounds per process by the threads it really has
    # (AUTH_LOGIN_CONCURRENCY, config/settings/base.py SERVER_THREADS), --threads included.
    os.environ["GUNICORN_THREADS"] = str(worker.cfg.threads)


def child_exit(server, worker):
    # A dead worker's gauges go; its counters stay in the totals.
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    if _own_metrics_dir:
        shutil.rmtree(_own_metrics_dir, ignore_errors=True)
