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

The row is also the index of a user's signed-in browsers (the sessions page,
accounts/devices.py): where and when the sign-in happened is copied from the
session's `SIGN_IN_KEY` entry at every save, and `last_seen` is written at
most every AUTH_SESSION_TOUCH_INTERVAL seconds (`touch`).
"""

from datetime import UTC, datetime, timedelta
from functools import cache
from types import SimpleNamespace

from django.contrib.auth import SESSION_KEY, get_user_model
from django.contrib.sessions.backends.base import UpdateError
from django.contrib.sessions.backends.db import SessionStore as DatabaseSessionStore
from django.db import DatabaseError, connections, router
from django.utils import timezone

from .conf import conf
from .record import SESSION_KEY as RECORD_KEY

# The session entry a sign-in writes (accounts/devices.py): {"at": unix time,
# "device": "Chrome 156 on Linux", "address": "203.0.113.9", "sid": backend id}.
SIGN_IN_KEY = "_auth_sign_in"
NEVER = datetime(1970, 1, 1, tzinfo=UTC)


class SessionStore(DatabaseSessionStore):
    prefetched_user = None
    last_seen: datetime | None = None

    @classmethod
    def get_model_class(cls):
        from .models import Session

        return Session

    def create_model_instance(self, data):
        instance = super().create_model_instance(data)
        instance.user_id = _user_id(data.get(SESSION_KEY))
        sign_in = data.get(SIGN_IN_KEY)
        if isinstance(sign_in, dict):
            instance.signed_in_at = _moment(sign_in.get("at"))
            instance.device = str(sign_in.get("device") or "")[:200]
            instance.address = str(sign_in.get("address") or "")[:64]
            instance.backend_sid = str(sign_in.get("sid") or "")[:128]
        record = data.get(RECORD_KEY)
        storage = record.get("storage", "cookies") if isinstance(record, dict) else ""
        instance.token_storage = str(storage)[:10]
        instance.last_seen = self.last_seen = timezone.now()
        return instance

    def touch(self) -> None:
        """Write `last_seen` if it is older than AUTH_SESSION_TOUCH_INTERVAL (one UPDATE).

        A session saved during the request has it written already; one that
        was never read from the database (`last_seen` unknown) is not touched.
        """
        if self.session_key is None or self.modified or self.last_seen is None:
            return
        now = timezone.now()
        if now - self.last_seen < timedelta(seconds=conf.session_touch_interval):
            return
        try:
            self.model.objects.filter(session_key=self.session_key).update(last_seen=now)
        except DatabaseError:
            return  # only the sessions page's "last seen" is late
        self.last_seen = now

    def save(self, must_create=False):
        # Updating a session is one UPDATE. Django's store sends it through
        # the ORM inside a transaction: BEGIN, UPDATE, COMMIT, three round
        # trips on every request that changes the session (each refresh does).
        if must_create or self.session_key is None:
            return super().save(must_create=must_create)
        instance = self.create_model_instance(self._get_session())
        connection = connections[router.db_for_write(self.model, instance=instance)]
        adapt = connection.ops.adapt_datetimefield_value
        params = [
            instance.session_data,
            adapt(instance.expire_date),
            instance.user_id,
            adapt(instance.signed_in_at),
            instance.device,
            instance.address,
            instance.backend_sid,
            adapt(instance.last_seen),
            instance.token_storage,
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
        self.prefetched_user = self.last_seen = None
        connection = connections[router.db_for_read(self.model)]
        query = _joined_query(connection.alias)
        now = connection.ops.adapt_datetimefield_value(timezone.now())
        with connection.cursor() as cursor:
            cursor.execute(query.sql, [self.session_key, now])
            row = cursor.fetchone()
        if row is None:
            self._session_key = None
            return None
        # A row from before the column existed counts as seen long ago.
        self.last_seen = query.last_seen(row[1]) or NEVER
        user_values = row[2:]
        if user_values[query.pk_index] is not None:
            self.prefetched_user = query.user(user_values)
        return SimpleNamespace(session_data=row[0])


def _moment(value) -> datetime | None:
    try:
        return datetime.fromtimestamp(float(value), UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        return None


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
            for index, col in enumerate(field.cached_col for field in self.fields)
        ]
        meta = Session._meta
        last_seen = meta.get_field("last_seen").cached_col
        self.last_seen_converters = (
            connection.ops.get_db_converters(last_seen) + last_seen.get_db_converters(connection),
            last_seen,
        )
        sessions, users = quote(meta.db_table), quote(user_model._meta.db_table)

        def column(name: str) -> str:
            return f"{sessions}.{quote(meta.get_field(name).column)}"

        user_columns = ", ".join(f"{users}.{quote(field.column)}" for field in self.fields)
        self.sql = (
            f"SELECT {column('session_data')}, {column('last_seen')}, {user_columns} "  # noqa: S608 - quoted names only
            f"FROM {sessions} LEFT JOIN {users} "
            f"ON {users}.{quote(user_model._meta.pk.column)} = {column('user')} "
            f"WHERE {column('session_key')} = %s AND {column('expire_date')} > %s"
        )

    def last_seen(self, value) -> datetime | None:
        connection = connections[self.alias]
        converters, col = self.last_seen_converters
        for converter in converters:
            value = converter(value, col, connection)
        return value

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

    columns = ("session_data", "expire_date", "user", "signed_in_at", "device", "address")
    columns += ("backend_sid", "last_seen", "token_storage")
    assignments = ", ".join(f"{column(name)} = %s" for name in columns)
    return (
        f"UPDATE {quote(meta.db_table)} SET {assignments} "  # noqa: S608 - quoted names only
        f"WHERE {column('session_key')} = %s"
    )
