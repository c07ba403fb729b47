"""Django's database session store, reading a request's session and its user in one query.

`SESSION_ENGINE = "accounts.sessions"`. Sessions live in the database, in
`accounts.Session`: Django's row plus the id of the user it signs in. Every
signed-in request needs both, so this store reads them together,
`Session.objects.select_related("user")`, and keeps the user on the store
(`prefetched_user`), where accounts/middleware.py's AuthenticationMiddleware
offers it to the backend's `get_user` (accounts/backends.py) instead of a
second query. Django's own checks stay: the session's user id and its
password hash are compared as always. Saving an existing session is one
`QuerySet.update()`, not Django's transaction around `Model.save()` (BEGIN,
UPDATE, COMMIT: three round trips); creating one, expiry and cycling the key
are Django's store, unchanged.

Optional: every feature of the package works on Django's own `db` and
`cached_db` stores too; this one saves a query and two round trips a request.
"""

from django.contrib.auth import SESSION_KEY, get_user_model
from django.contrib.sessions.backends.base import UpdateError
from django.contrib.sessions.backends.db import SessionStore as DatabaseSessionStore
from django.core.exceptions import ValidationError
from django.db import DatabaseError, router
from django.utils import timezone

from . import users


class SessionStore(DatabaseSessionStore):
    """Django's database store over `accounts.Session`, the user read with the session.

    After `load()`, `prefetched_user` is the session's user row (None when the
    session names none, or a user that is gone). To store more of the session
    in the row, subclass and extend `create_model_instance`: `save()` writes
    every column it fills.
    """

    prefetched_user = None

    @classmethod
    def get_model_class(cls):
        from .models import Session

        return Session

    def create_model_instance(self, data):
        instance = super().create_model_instance(data)
        instance.user_id = _user_id(data.get(SESSION_KEY))
        return instance

    def load(self):
        """Return the session's data, reading its row and its user's in one query."""
        self.prefetched_user = None
        try:
            row = self.model.objects.select_related(_user_related()).get(
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


def _user_related() -> str:
    # The user, and its backend identity when the user model keeps none itself
    # (accounts/users.py): the roles every page checks come in the same query.
    return "user" if users.on_user_model() else f"user__{users.IDENTITY}"


def _user_id(value):
    # The pk Django's login() stored, as a string; the column is only a
    # shortcut for the join, so anything else simply leaves it empty.
    if not isinstance(value, str | int) or isinstance(value, bool):
        return None
    try:
        return get_user_model()._meta.pk.to_python(value)
    except ValidationError:
        return None
