"""gunicorn settings for production: `gunicorn config.wsgi` reads this file from the project root.

Everything comes from the environment so one image serves every box:

    GUNICORN_BIND          address to listen on (default 127.0.0.1:8000;
                           0.0.0.0:8000 behind a balancer)
    WEB_CONCURRENCY        worker processes (default 2 × CPU cores + 1)
    GUNICORN_THREADS       threads per worker (default 4): a request waiting for a
                           token refresh (up to AUTH_REFRESH_WAIT) does not hold a whole process
    GUNICORN_TIMEOUT       seconds before a stuck worker is replaced (default 30)
    FORWARDED_ALLOW_IPS    proxies whose X-Forwarded-* headers are trusted (default 127.0.0.1,::1)
"""

import multiprocessing
import os

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
errorlog = "-"
# Several gunicorn masters may run on one host (one per port): no shared control socket.
control_socket_disable = True
