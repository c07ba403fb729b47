"""Django's database session store, reading a request's session and user in one query.

Sessions live in the database (config/settings/base.py says why not
cached_db), in `accounts.Session`: Django's row plus the id of the user it
signs in. Every signed-in request needs both, and through the ORM that is two
round trips, two querysets and two compiled queries. This store reads them
with one parameterised join and keeps the user row on the store
(`prefetched_user`), where accounts/middleware.py's AuthenticationMiddleware
hands it to the backend's `get_user` (accounts/backends.py) instead of a
second query. Django's own checks stay: the session's user id and its
password hash are compared as always. Saving an existing session is one
UPDATE statement, not Django's transaction around the ORM's (three round
trips); creating one, expiry and cycling the key are Django's store,
unchanged, apart from writing the user id column.
"""

from functools import cache
from types import SimpleNamespace

from django.contrib.auth import SESSION_KEY, get_user_model
from django.contrib.sessions.backends.base import UpdateError
from django.contrib.sessions.backends.db import SessionStore as DatabaseSessionStore
from django.db import DatabaseError, connections, router
from django.utils import timezone


class SessionStore(DatabaseSessionStore):
    prefetched_user = None

    @classmethod
    def get_model_class(cls):
        from .models import Session

        return Session

    def create_model_instance(self, data):
        instance = super().create_model_instance(data)
        instance.user_id = _user_id(data.get(SESSION_KEY))
        return instance

    def save(self, must_create=False):
        # Updating a session is one UPDATE. Django's store sends it through
        # the ORM inside a transaction: BEGIN, UPDATE, COMMIT, three round
        # trips on every request that changes the session (each refresh does).
        if must_create or self.session_key is None:
            return super().save(must_create=must_create)
        instance = self.create_model_instance(self._get_session())
        connection = connections[router.db_for_write(self.model, instance=instance)]
        params = [
            instance.session_data,
            connection.ops.adapt_datetimefield_value(instance.expire_date),
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

    def _get_session_from_db(self):
        self.prefetched_user = None
        connection = connections[router.db_for_read(self.model)]
        query = _joined_query(connection.alias)
        now = connection.ops.adapt_datetimefield_value(timezone.now())
        with connection.cursor() as cursor:
            cursor.execute(query.sql, [self.session_key, now])
            row = cursor.fetchone()
        if row is None:
            self._session_key = None
            return None
        user_values = row[1:]
        if user_values[query.pk_index] is not None:
            self.prefetched_user = query.user(user_values)
        return SimpleNamespace(session_data=row[0])


def _user_id(value) -> int | None:
    # The pk Django's login() stored, as a string; the column is only a
    # shortcut for the join, so anything else simply leaves it empty.
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


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
            for index, col in enumerate(field.get_col("u") for field in self.fields)
        ]
        self.converters = [c for c in self.converters if c[1]]
        meta = Session._meta

        def column(name: str) -> str:
            return "s." + quote(meta.get_field(name).column)

        user_columns = ", ".join(f"u.{quote(field.column)}" for field in self.fields)
        self.sql = (
            f"SELECT {column('session_data')}, {user_columns} "  # noqa: S608 - quoted names only
            f"FROM {quote(meta.db_table)} s "
            f"LEFT JOIN {quote(user_model._meta.db_table)} u "
            f"ON u.{quote(user_model._meta.pk.column)} = {column('user')} "
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

    return (
        f"UPDATE {quote(meta.db_table)} SET {column('session_data')} = %s, "  # noqa: S608 - quoted names only
        f"{column('expire_date')} = %s, {column('user')} = %s WHERE {column('session_key')} = %s"
    )
