"""The session store with hand-written SQL: `SESSION_ENGINE = "accounts.sessions_raw"`.

accounts/sessions.py with its two statements written by hand instead of
built by the ORM: the read is one parameterised join whose rows are
converted as a queryset would (`get_db_converters`, `Model.from_db`), the
save of an existing session one UPDATE over a column list. It saves the ORM
compiling the query on every request: 0.8-1.7 ms of app CPU per warm
signed-in page in `make bench` (g) (bench/README.md, "(g) Session stores"),
which is why it is kept, opt-in. The price: those converters, `from_db` and
the column list are Django's internals and this module's to keep in step
with the model; tests/test_sessions.py runs every test against both stores.
Everything else (creating, expiry, cycling the key) is accounts/sessions.py's
store.
"""

from functools import cache

from django.contrib.auth import get_user_model
from django.contrib.sessions.backends.base import UpdateError
from django.db import DatabaseError, connections, router
from django.utils import timezone

from . import sessions


class SessionStore(sessions.SessionStore):
    """accounts.sessions' store, reading and updating its row with hand-written SQL.

    Same rows, same `prefetched_user` after `load()`. A column added to
    `accounts.Session` must be added to `_update_statement` too.
    """

    def save(self, must_create=False):
        if must_create or self.session_key is None:
            return super().save(must_create=must_create)
        instance = self.create_model_instance(dict(self.items()))
        connection = connections[router.db_for_write(self.model, instance=instance)]
        adapt = connection.ops.adapt_datetimefield_value
        params = [
            instance.session_data,
            adapt(instance.expire_date),
            instance.user_id,
            instance.session_key,
        ]
        try:
            with connection.cursor() as cursor:
                cursor.execute(_update_statement(connection.alias), params)
                updated = cursor.rowcount
        except DatabaseError as exc:
            raise UpdateError from exc  # as Django's store does
        if updated != 1:
            raise UpdateError  # the session was deleted meanwhile

    def load(self):
        self.prefetched_user = None
        connection = connections[router.db_for_read(self.model)]
        query = _joined_query(connection.alias)
        now = connection.ops.adapt_datetimefield_value(timezone.now())
        with connection.cursor() as cursor:
            cursor.execute(query.sql, [self.session_key, now])
            row = cursor.fetchone()
        if row is None:
            self._session_key = None
            return {}
        user_values = row[1:]
        if user_values[query.pk_index] is not None:
            self.prefetched_user = query.user(user_values)
        return self.decode(row[0])


class _JoinedQuery:
    """The join's SQL for one database, and how its user columns become a User."""

    def __init__(self, alias: str):
        from .models import Session

        connection = connections[alias]
        quote = connection.ops.quote_name
        user_model = get_user_model()
        self.alias = alias
        self.fields = user_model._meta.concrete_fields
        self.pk_index = self.fields.index(user_model._meta.pk)
        self.attnames = [field.attname for field in self.fields]
        self.user_model = user_model
        # The same conversions the ORM applies to these columns (SQLite's
        # booleans and datetimes, for one).
        self.converters = [
            (
                index,
                connection.ops.get_db_converters(col) + col.get_db_converters(connection),
                col,
            )
            for index, col in enumerate(field.cached_col for field in self.fields)
        ]
        meta = Session._meta
        sessions_table, users = quote(meta.db_table), quote(user_model._meta.db_table)

        def column(name: str) -> str:
            return f"{sessions_table}.{quote(meta.get_field(name).column)}"

        user_columns = ", ".join(f"{users}.{quote(field.column)}" for field in self.fields)
        self.sql = (
            f"SELECT {column('session_data')}, {user_columns} "  # noqa: S608 - quoted names only
            f"FROM {sessions_table} LEFT JOIN {users} "
            f"ON {users}.{quote(user_model._meta.pk.column)} = {column('user')} "
            f"WHERE {column('session_key')} = %s AND {column('expire_date')} > %s"
        )

    def user(self, values):
        values = list(values)
        connection = connections[self.alias]
        for index, converters, col in self.converters:
            for converter in converters:
                values[index] = converter(values[index], col, connection)
        return self.user_model.from_db(self.alias, self.attnames, values)


@cache
def _joined_query(alias: str) -> _JoinedQuery:
    return _JoinedQuery(alias)


@cache
def _update_statement(alias: str) -> str:
    from .models import Session

    quote = connections[alias].ops.quote_name
    meta = Session._meta

    def column(name: str) -> str:
        return quote(meta.get_field(name).column)

    columns = ("session_data", "expire_date", "user")
    assignments = ", ".join(f"{column(name)} = %s" for name in columns)
    return (
        f"UPDATE {quote(meta.db_table)} SET {assignments} "  # noqa: S608 - quoted names only
        f"WHERE {column('session_key')} = %s"
    )
