from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth.models import AbstractUser, UserManager
from django.contrib.sessions.base_session import AbstractBaseSession
from django.db import models
from django.utils.module_loading import import_string


@dataclass(frozen=True)
class UserProfile:
    """A `/users/me` answer: who the auth backend says the user is."""

    id: str
    email: str
    first_name: str
    last_name: str
    roles: tuple[str, ...]


class BackendUserFields(models.Model):
    """What the package keeps of a backend user, as fields of a custom user model.

    A project's own user model may inherit these (the demo's `User` does);
    any other keeps them in `BackendIdentity` (accounts/users.py).
    Local superusers made with `createsuperuser` have no `backend_id`.
    """

    backend_id = models.CharField(max_length=128, unique=True, null=True, blank=True)
    roles = models.JSONField(default=list, blank=True)

    class Meta:
        abstract = True


class User(BackendUserFields, AbstractUser):
    """A person known to the auth backend, mirrored here at every sign-in and refresh.

    The demo's user model. A project keeps its own, or Django's: see
    accounts/users.py for what the package needs of it.
    """

    objects = UserManager()

    class Meta(AbstractUser.Meta):
        # As Django's own: a project with another AUTH_USER_MODEL gets no table of it.
        swappable = "AUTH_USER_MODEL"

    def __str__(self) -> str:
        return self.get_full_name() or self.email or self.username


class BackendIdentity(models.Model):
    """The backend's id and roles of a user whose model does not keep them itself.

    Used when AUTH_USER_MODEL has no `backend_id` and `roles` fields (Django's
    `auth.User`, say): accounts/users.py reads and writes it.
    """

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="backend_identity"
    )
    backend_id = models.CharField(max_length=128, unique=True)
    roles = models.JSONField(default=list, blank=True)

    class Meta:
        verbose_name_plural = "backend identities"

    def __str__(self) -> str:
        return f"backend user {self.backend_id}"


class Session(AbstractBaseSession):
    """Django's session row, plus whose it is (the store: accounts/sessions.py).

    `user` is copied from the session's own `_auth_user_id` at every save, so
    one query reads a request's session and its user together. No database
    constraint: a session saved while its user is being deleted must not fail
    the request; deleting a user through the ORM still deletes their sessions.
    """

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        db_constraint=False,
        related_name="sessions",
    )

    @classmethod
    def get_session_store_class(cls):
        # accounts.sessions_raw keeps its sessions in this model too, encoded the same way.
        # By name: the store module imports this one.
        return import_string("accounts.sessions.SessionStore")


class LoginCounter(models.Model):
    """One sign-in throttle counter (accounts/throttle.py): a key, a count, its window's end.

    Counted in the database, not the cache: one atomic upsert per step, shared
    by every worker of every app server, and still there when the cache is not.
    """

    key = models.CharField(max_length=100, primary_key=True)
    count = models.IntegerField(default=0)
    expires_at = models.FloatField(help_text="Unix time the window ends")

    def __str__(self) -> str:
        return f"{self.key}: {self.count}"


class PendingRevocation(models.Model):
    """A sign-out the backend has not heard of yet (accounts/revocations.py).

    The backend needs the token itself to revoke it, so the pair is kept
    encrypted (`sealed`); `token_hash` is a keyed hash that lets the same
    token be queued once. Retried with back-off until `expires_at`, the
    refresh token's own expiry, after which there is nothing left to revoke.
    """

    token_hash = models.CharField(max_length=64, unique=True)
    backend_user_id = models.CharField(max_length=128, blank=True)
    sealed = models.TextField()
    queued_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    next_attempt_at = models.DateTimeField()
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.CharField(max_length=200, blank=True)

    class Meta:
        indexes = [models.Index(fields=["next_attempt_at"])]

    def __str__(self) -> str:
        return f"revocation for backend user {self.backend_user_id or '?'}"
