"""gunicorn settings for production: `gunicorn config.wsgi` reads this file from the project root.

Everything comes from the environment so one image serves every box:

    GUNICORN_BIND          address to listen on (default 127.0.0.1:8000;
                           0.0.0.0:8000 behind a balancer)
    WEB_CONCURRENCY        worker processes (default 2 × CPU cores + 1)
    GUNICORN_THREADS       threads per worker (default 4): a request waiting for a
                           token refresh (up to AUTH_REFRESH_WAIT) does not hold a whole process;
                           each worker's app reads the count it runs (sign-in takes at most
                           half of them, AUTH_LOGIN_CONCURRENCY)
    GUNICORN_TIMEOUT       seconds before a stuck worker is replaced (default 30)
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
workers = int(os.environ.get("WEB_CONCURRENCY", multiprocessing.cpu_count() * 2 + 1))
threads = int(os.environ.get("GUNICORN_THREADS", "4"))
worker_class = "gthread" if threads > 1 else "sync"
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "30"))
graceful_timeout = 10
keepalive = 5
# Recycle workers now and then so a slow leak can never take a box down.
max_requests = 2000
max_requests_jitter = 200
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
