"""Django's database session store, reading a request's session and its user in one query.

Sessions live in the database (config/settings/base.py says why not
cached_db), in `accounts.Session`: Django's row plus the id of the user it
signs in. Every signed-in request needs both, so this store reads them
together, `Session.objects.select_related("user")`, and keeps the user on the
store (`prefetched_user`), where accounts/middleware.py's
AuthenticationMiddleware offers it to the backend's `get_user`
(accounts/backends.py) instead of a second query. Django's own checks stay:
the session's user id and its password hash are compared as always. Saving
an existing session is one `QuerySet.update()`, not Django's transaction
around `Model.save()` (BEGIN, UPDATE, COMMIT: three round trips); creating
one, expiry and cycling the key are Django's store, unchanged.

The row is also the index of a user's signed-in browsers (the sessions page,
accounts/devices.py): where and when the sign-in happened is copied from the
session's `SIGN_IN_KEY` entry at every save, and `last_seen` is written at
most every AUTH_SESSION_TOUCH_INTERVAL seconds (`touch`).
"""

from datetime import UTC, datetime, timedelta

from django.contrib.auth import SESSION_KEY
from django.contrib.sessions.backends.base import UpdateError
from django.contrib.sessions.backends.db import SessionStore as DatabaseSessionStore
from django.db import DatabaseError, router
from django.utils import timezone

from .conf import conf
from .record import SESSION_KEY as RECORD_KEY

# The session entry a sign-in writes (accounts/devices.py): {"at": unix time,
# "device": "Chrome 156 on Linux", "address": "203.0.113.9", "sid": backend id}.
SIGN_IN_KEY = "_auth_sign_in"
NEVER = datetime(1970, 1, 1, tzinfo=UTC)


class SessionStore(DatabaseSessionStore):
    """Django's database store over `accounts.Session`, the user read with the session.

    After `load()`, `prefetched_user` is the session's user row (None when the
    session names none, or a user that is gone) and `last_seen` the row's
    last-seen time. To store more of the session in the row, subclass and
    extend `create_model_instance`: `save()` writes every column it fills.
    """

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

    def load(self):
        """Return the session's data, reading its row and its user's in one query."""
        self.prefetched_user = self.last_seen = None
        try:
            row = self.model.objects.select_related("user").get(
                session_key=self.session_key, expire_date__gt=timezone.now()
            )
        except self.model.DoesNotExist:
            # As Django's stores do: a key with no live session is not reused,
            # so the next save creates a new one (no session fixation). The
            # setter is SessionBase's own, private: every store of Django's
            # sets it so (test_an_expired_session_reads_as_empty_and_gets_no_key).
            self._session_key = None
            return {}
        self.prefetched_user = row.user
        # A row from before the column existed counts as seen long ago.
        self.last_seen = row.last_seen or NEVER
        return self.decode(row.session_data)

    def save(self, must_create=False):
        # Updating a session is one UPDATE. Django's store saves the model
        # inside a transaction: BEGIN, UPDATE, COMMIT, three round trips on
        # every request that changes the session (each refresh does).
        if must_create or self.session_key is None:
            return super().save(must_create=must_create)
        row = self.create_model_instance(dict(self.items()))
        using = router.db_for_write(self.model, instance=row)
        columns = [f.attname for f in self.model._meta.concrete_fields if not f.primary_key]
        try:
            updated = (
                self.model.objects.using(using)
                .filter(pk=row.pk)
                .update(**{name: getattr(row, name) for name in columns})
            )
        except DatabaseError as exc:
            raise UpdateError from exc  # as Django's store does
        if updated != 1:
            raise UpdateError  # the session was deleted meanwhile

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
