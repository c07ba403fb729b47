from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth.hashers import make_password
from django.contrib.auth.models import AbstractUser, Group, UserManager
from django.contrib.sessions.base_session import AbstractBaseSession
from django.db import models, transaction
from django.utils.module_loading import import_string

from .conf import conf
from .rolematch import shared_roles


@dataclass(frozen=True)
class UserProfile:
    """A `/users/me` answer: who the auth backend says the user is."""

    id: str
    email: str
    first_name: str
    last_name: str
    roles: tuple[str, ...]


class MirroredUserManager(UserManager):
    @staticmethod
    def mirrored_fields(profile: UserProfile) -> dict:
        """Return the fields of the mirror that follow `profile`."""
        is_super = bool(shared_roles(profile.roles, conf.superuser_roles))
        return {
            "email": profile.email,
            "first_name": profile.first_name[:150],
            "last_name": profile.last_name[:150],
            "roles": list(profile.roles),
            "is_staff": is_super,
            "is_superuser": is_super,
        }

    def sync_from_profile(self, profile: UserProfile, *, current: "User | None" = None) -> "User":
        """Create or update the mirror of `profile`, keyed by the backend's id.

        Roles become the user's `roles` and groups of the same names; roles in
        AUTH_SUPERUSER_ROLES make the user staff and superuser, so Django's
        admin follows the backend. The password stays unusable: this database
        can never sign anyone in on its own. `current`, the user the request
        has loaded already, comes back as it is when it mirrors `profile`
        (the common case at every refresh): no query at all.
        """
        wanted = self.mirrored_fields(profile)
        if (
            isinstance(current, User)
            and current.backend_id == profile.id
            and all(getattr(current, f) == value for f, value in wanted.items())
        ):
            return current
        with transaction.atomic():
            # get_or_create absorbs the race of two first sign-ins of one person
            # (the losing INSERT hits the unique key and reads the winner's row).
            user, created = self.select_for_update().get_or_create(
                backend_id=profile.id,
                defaults={"username": f"api-{profile.id}"[:150], "password": make_password(None)},
            )
            if not created and all(getattr(user, f) == value for f, value in wanted.items()):
                return user
            roles_changed = created or user.roles != wanted["roles"]
            for field, value in wanted.items():
                setattr(user, field, value)
            user.save()
            if roles_changed:
                groups = [Group.objects.get_or_create(name=role[:150])[0] for role in profile.roles]
                user.groups.set(groups)
            return user


class User(AbstractUser):
    """A person known to the auth backend, mirrored here at every sign-in and refresh.

    Local superusers made with `createsuperuser` have no `backend_id`.
    """

    backend_id = models.CharField(max_length=128, unique=True, null=True, blank=True)
    roles = models.JSONField(default=list, blank=True)

    objects = MirroredUserManager()

    def __str__(self) -> str:
        return self.get_full_name() or self.email or self.username


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
