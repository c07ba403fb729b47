from django.conf import settings
from django.db import models
from django.utils import timezone


class UserSessionQuerySet(models.QuerySet):
    def live(self):
        """The rows whose session has not expired by the time last written."""
        return self.filter(expires_at__gt=timezone.now())


class UserSession(models.Model):
    """One signed-in browser: whose session it is, where and when it signed in.

    An index of the sessions the session store keeps, whatever store
    SESSION_ENGINE names (Django's `db` or `cached_db`, or accounts.sessions):
    written when someone signs in (accounts/usersessions/signins.py), its
    `last_seen` and `expires_at` brought up to date by UserSessionMiddleware at
    most every AUTH_SESSION_TOUCH_INTERVAL seconds, deleted when the session
    ends through Django's `logout()` or from another browser. The session
    itself stays in the store: ending one deletes it there.
    """

    session_key = models.CharField(max_length=40, primary_key=True)
    # No database constraint, as on accounts.Session: a user row removed behind the
    # ORM's back must not fail a request; deleting a user through the ORM deletes these.
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        db_constraint=False,
        related_name="signed_in_sessions",
    )
    signed_in_at = models.DateTimeField(null=True, blank=True)
    device = models.CharField(max_length=200, blank=True)
    address = models.CharField(max_length=64, blank=True)
    # The backend's id for this sign-in (its access token's `sid`), which a
    # back-channel sign-out may name (accounts/usersessions/backchannel.py).
    backend_sid = models.CharField(max_length=128, blank=True, db_index=True)
    last_seen = models.DateTimeField(null=True, blank=True)
    # When the session expires, as its store said when the row was last written.
    expires_at = models.DateTimeField(db_index=True)
    # Where the sign-in's tokens are (its TokenRecord's `storage`), for the
    # `auth_sessions` metric (accounts/ops/metrics.py); empty for other sign-ins.
    token_storage = models.CharField(max_length=10, blank=True)

    objects = UserSessionQuerySet.as_manager()

    class Meta:
        indexes = [models.Index(fields=["user", "expires_at"])]

    def __str__(self) -> str:
        return f"{self.device or 'Unknown device'} of user {self.user_id}"
