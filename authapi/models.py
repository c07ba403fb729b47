from django.contrib.auth.hashers import check_password, make_password
from django.db import models


class ApiUser(models.Model):
    """An account of the reference auth API (not Django's auth user)."""

    email = models.EmailField(unique=True)
    first_name = models.CharField(max_length=150)
    last_name = models.CharField(max_length=150)
    password = models.CharField(max_length=256)
    roles = models.JSONField(default=list)
    is_active = models.BooleanField(default=True)

    def __str__(self) -> str:
        return self.email

    def set_password(self, raw_password: str) -> None:
        self.password = make_password(raw_password)

    def check_password(self, raw_password: str) -> bool:
        return check_password(raw_password, self.password)

    def as_profile(self) -> dict:
        """Return the `/users/me` body, in the NestJS backend's camelCase."""
        return {
            "id": self.pk,
            "firstName": self.first_name,
            "lastName": self.last_name,
            "email": self.email,
            "roles": list(self.roles),
        }


class TokenFamily(models.Model):
    """All refresh tokens descended from one sign-in (RFC 9700 §4.14.2).

    Revoking the family ends that sign-in everywhere: its refresh tokens stop
    refreshing and its access tokens stop reading `/users/me`.
    """

    user = models.ForeignKey(ApiUser, on_delete=models.CASCADE, related_name="families")
    created_at = models.DateTimeField(auto_now_add=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    revoked_reason = models.CharField(max_length=32, blank=True)

    class Meta:
        verbose_name_plural = "token families"

    def __str__(self) -> str:
        return f"family {self.pk} of user {self.user_id}"


class RefreshToken(models.Model):
    """One refresh token, stored only as its SHA-256 hash."""

    family = models.ForeignKey(TokenFamily, on_delete=models.CASCADE, related_name="tokens")
    token_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    spent_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"refresh token {self.pk} of family {self.family_id}"


class LoginFailure(models.Model):
    """A failed sign-in, counted per account and per client IP for throttling."""

    email = models.CharField(max_length=254, db_index=True)
    ip = models.GenericIPAddressField(db_index=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    def __str__(self) -> str:
        return f"failed sign-in for {self.email} from {self.ip}"
