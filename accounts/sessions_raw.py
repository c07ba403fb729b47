"""The session store with hand-written SQL: `SESSION_ENGINE = "accounts.sessions_raw"`.

accounts/sessions.py with its two statements written by hand instead of
built by the ORM: the read is one parameterised join whose rows are
converted as a queryset would (`get_db_converters`, `Model.from_db`), the
save of an existing session one UPDATE over a column list. It saves the ORM
compiling the query on every request: 0.8-1.7 ms of app CPU per warm
signed-in page in `make bench` (g) (bench/README.md, "(g) Session stores"),
which is why the demo uses it (issue 23). The price: those converters, `from_db` and
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

from . import sessions, users


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
        query = _joined_query(connection.alias, users.on_user_model())
        now = connection.ops.adapt_datetimefield_value(timezone.now())
        with connection.cursor() as cursor:
            cursor.execute(query.sql, [self.session_key, now])
            row = cursor.fetchone()
        if row is None:
            self._session_key = None
            return {}
        if row[1 + query.pk_index] is not None:
            self.prefetched_user = query.user(row[1:])
        return self.decode(row[0])


class _Rows:
    """One model's columns in the join, and how its values become an instance."""

    def __init__(self, model, connection):
        self.model = model
        self.fields = model._meta.concrete_fields
        self.attnames = [field.attname for field in self.fields]
        self.pk_index = self.fields.index(model._meta.pk)
        table = connection.ops.quote_name(model._meta.db_table)
        self.columns = [f"{table}.{connection.ops.quote_name(f.column)}" for f in self.fields]
        # The same conversions the ORM applies to these columns (SQLite's
        # booleans and datetimes, JSON, for some).
        self.converters = [
            (
                index,
                connection.ops.get_db_converters(col) + col.get_db_converters(connection),
                col,
            )
            for index, col in enumerate(field.cached_col for field in self.fields)
        ]

    def instance(self, values, connection):
        values = list(values)
        for index, converters, col in self.converters:
            for converter in converters:
                values[index] = converter(values[index], col, connection)
        return self.model.from_db(connection.alias, self.attnames, values)


class _JoinedQuery:
    """The join's SQL for one database, and how its columns become a User.

    When the user model keeps no backend id and roles itself, its
    `BackendIdentity` comes in the same statement, as accounts/sessions.py's
    `select_related` reads it, and is cached on the user.
    """

    def __init__(self, alias: str, on_user_model: bool):
        from .models import BackendIdentity, Session

        connection = connections[alias]
        quote = connection.ops.quote_name
        user_model = get_user_model()
        self.alias = alias
        self.users = _Rows(user_model, connection)
        self.pk_index = self.users.pk_index
        self.identities = None if on_user_model else _Rows(BackendIdentity, connection)
        meta = Session._meta
        sessions_table, users_table = quote(meta.db_table), quote(user_model._meta.db_table)

        def column(name: str) -> str:
            return f"{sessions_table}.{quote(meta.get_field(name).column)}"

        selected = [column("session_data"), *self.users.columns]
        joins = (
            f"LEFT JOIN {users_table} "
            f"ON {users_table}.{quote(user_model._meta.pk.column)} = {column('user')}"
        )
        if self.identities is not None:
            identities = quote(BackendIdentity._meta.db_table)
            user_column = quote(BackendIdentity._meta.get_field("user").column)
            selected += self.identities.columns
            joins += (
                f" LEFT JOIN {identities} ON {identities}.{user_column} = "
                f"{users_table}.{quote(user_model._meta.pk.column)}"
            )
        self.sql = (
            f"SELECT {', '.join(selected)} FROM {sessions_table} {joins} "  # noqa: S608 - quoted names only
            f"WHERE {column('session_key')} = %s AND {column('expire_date')} > %s"
        )

    def user(self, values):
        connection = connections[self.alias]
        count = len(self.users.fields)
        user = self.users.instance(values[:count], connection)
        if self.identities is not None:
            rest = values[count:]
            identity = None
            if rest[self.identities.pk_index] is not None:
                identity = self.identities.instance(rest, connection)
            # As select_related leaves them: the user knows its identity (or that
            # it has none), and the identity its user.
            related = getattr(type(user), users.IDENTITY).related
            related.set_cached_value(user, identity)
            if identity is not None:
                related.field.set_cached_value(identity, user)
        return user


@cache
def _joined_query(alias: str, on_user_model: bool) -> _JoinedQuery:
    return _JoinedQuery(alias, on_user_model)


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
