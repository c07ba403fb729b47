"""Django's database session store, with the one query every request makes kept lean.

Sessions live in the database (config/settings/base.py says why not
cached_db). Each request reads its session: through the ORM that is a
queryset, a compiled query and a model instance for one text column, which
`bench/proxy_breakdown.py` measured at about twice the cost of the query
itself. This reads the column with one parameterised statement and leaves
everything else (saving, expiry, cycling the key) to Django's store.
"""

from types import SimpleNamespace

from django.contrib.sessions.backends.db import SessionStore as DatabaseSessionStore
from django.db import connections, router
from django.utils import timezone


class SessionStore(DatabaseSessionStore):
    def _get_session_from_db(self):
        model = self.model
        connection = connections[router.db_for_read(model)]
        quote = connection.ops.quote_name
        meta = model._meta
        key = quote(meta.get_field("session_key").column)
        data = quote(meta.get_field("session_data").column)
        expiry = quote(meta.get_field("expire_date").column)
        sql = (
            f"SELECT {data} FROM {quote(meta.db_table)} "  # noqa: S608 - quoted names only
            f"WHERE {key} = %s AND {expiry} > %s"
        )
        now = connection.ops.adapt_datetimefield_value(timezone.now())
        with connection.cursor() as cursor:
            cursor.execute(sql, [self.session_key, now])
            row = cursor.fetchone()
        if row is None:
            self._session_key = None
            return None
        return SimpleNamespace(session_data=row[0])
