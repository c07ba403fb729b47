"""Django's PostgreSQL backend, with a health check that costs no round trip when idle.

With CONN_HEALTH_CHECKS, Django sends `SELECT 1` before the first query of
every request that reuses a connection: a whole round trip to the database
(bench/proxy_breakdown.py measured it at a third of the app's database time).
A connection the server has closed (a restart, `pg_terminate_backend`, a
crash) has something to read on its socket: the server's goodbye or end of
file. So look first, without waiting: nothing there and no transaction open
means the connection is as it was, and the check is done; anything there
means Django's own `SELECT 1` decides, and a dead connection is replaced
before the request's first query, as before.
"""

import select

from django.db.backends.postgresql import base
from psycopg.pq import TransactionStatus


class DatabaseWrapper(base.DatabaseWrapper):
    def close_if_health_check_failed(self):
        if (
            self.health_check_enabled
            and not self.health_check_done
            and not self.pool
            and self.connection is not None
            and _quiet(self.connection)
        ):
            self.health_check_done = True
            return
        super().close_if_health_check_failed()


def _quiet(connection) -> bool:
    """Return whether an open connection is idle and the server has said nothing since."""
    if connection.closed or connection.broken:
        return False
    if connection.info.transaction_status != TransactionStatus.IDLE:
        return False
    poller = select.poll()
    poller.register(connection.fileno(), select.POLLIN | select.POLLPRI)
    return not poller.poll(0)
