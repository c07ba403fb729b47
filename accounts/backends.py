"""The django.contrib.auth backend: the Credentials provider's `authorize()`."""

import contextlib
import logging
from contextvars import ContextVar

from django.contrib.auth.backends import BaseBackend
from django.core.exceptions import ObjectDoesNotExist, ValidationError
from django.http import HttpRequest

from . import cookies, revocations, users
from .client import get_client
from .conf import conf
from .exceptions import (
    AccessRefused,
    BackendError,
    CookieTooLarge,
    InvalidCredentials,
)
from .forwarded import client_ip
from .models import UserProfile
from .record import COOKIES
from .rolematch import roles_allowed
from .slots import Slots
from .state import TokenState
from .tokens import Tokens

logger = logging.getLogger(__name__)


# The user row the request's session query already read (accounts/sessions.py),
# offered to get_user for the length of one auth.get_user() call
# (accounts/middleware.py).
_prefetched_user: ContextVar = ContextVar("prefetched_user", default=None)


@contextlib.contextmanager
def offering(user):
    """Let `AuthApiBackend.get_user` use `user` instead of querying, if it is the one asked for."""
    token = _prefetched_user.set(user)
    try:
        yield
    finally:
        _prefetched_user.reset(token)


_sign_in_slots = Slots("sign-ins", "AUTH_LOGIN_CONCURRENCY")


def _revoke(tokens: Tokens) -> None:
    # The tokens were never handed to the browser and no session records them,
    # so there is nothing to queue under: a failure leaves them usable only at
    # the backend, until they expire.
    revocations.Revoker().revoke(tokens, record=None)


class AuthApiBackend(BaseBackend):
    """Sign in against the auth API: `authenticate(request, email=…, password=…)`.

    POST the credentials to the login endpoint, read the profile with the new
    cookies, apply AUTH_ALLOWED_ROLES, mirror the user (`mirror`: any
    AUTH_USER_MODEL, accounts/users.py) and hand the pair to the request's
    `TokenState`, which records it in the session and relays the cookies with
    the response.

    A project fills its own user fields by subclassing and overriding
    `user_fields(profile)` (the fields that follow the profile, compared at
    every refresh) and `create_user(profile, fields)` (a user seen for the
    first time), as mozilla-django-oidc's backend does.

    Returns None for wrong credentials, so Django may try another backend.
    Raises `AccessRefused` for a valid account without an allowed role (its
    fresh tokens revoked), `CookieTooLarge` in cookie mode for a token cookie
    the browser would drop (revoked too), and `Throttled`, `BackendUnavailable` or
    `BackendProtocolError` when the backend cannot answer the question: an
    unreachable backend is not a wrong password. At most
    AUTH_LOGIN_CONCURRENCY sign-ins of a process are at the backend at once
    (`accounts.slots.Slots`); one over it is `BackendUnavailable` too.
    """

    # Its sessions hold the API's tokens: the token middleware looks after them
    # (accounts/state.py); a local account's (ModelBackend) it leaves alone.
    keeps_api_tokens = True

    def authenticate(self, request: HttpRequest | None, email=None, password=None, **kwargs):
        if email is None or password is None:
            return None
        with _sign_in_slots.hold(limit=conf.login_concurrency):
            return self._authenticate(request, email, password)

    def _authenticate(self, request: HttpRequest | None, email: str, password: str):
        client = get_client()
        ip = client_ip(request) if request is not None else None
        try:
            issued = client.login(email, password, client_ip=ip)
        except InvalidCredentials:
            logger.info("Sign-in refused by the auth backend")
            return None
        tokens = Tokens().updated_by(issued)
        try:
            profile = client.me(tokens)
        except BackendError:
            _revoke(tokens)
            raise
        if not roles_allowed(profile.roles):
            _revoke(tokens)
            logger.info(
                "Sign-in of backend user %s refused: roles %s share none with "
                "AUTH_ALLOWED_ROLES (%s)%s",
                profile.id,
                list(profile.roles),
                ", ".join(sorted(conf.allowed_roles)),
                ""
                if conf.roles_case_insensitive
                else "; names are matched case-sensitively unless AUTH_ROLES_CASE_INSENSITIVE=True",
            )
            raise AccessRefused(profile.id)
        too_large = cookies.too_large(issued) if conf.token_storage == COOKIES else []
        if too_large:
            _revoke(tokens)
            name, size = too_large[0]
            logger.error(
                "Sign-in refused: the %s cookie would be %s bytes with its attributes, and "
                "browsers drop cookies over %s bytes. Set AUTH_TOKEN_STORAGE=session to keep "
                "the tokens on the server.",
                name,
                size,
                cookies.BROWSER_LIMIT,
            )
            raise CookieTooLarge(name, size)
        user = self.mirror(profile)
        if not self.user_can_authenticate(user):
            _revoke(tokens)
            return None
        if request is not None:
            TokenState.of(request).signed_in(profile, issued)
        return user

    def get_user(self, user_id):
        # Read with every request, never a cached copy: a change of any kind
        # (QuerySet.update(), the admin's bulk delete, deactivation) takes
        # effect on that user's next request. Usually the row came with the
        # session, in the same query.
        user = _prefetched_user.get()
        if user is None or str(user.pk) != str(user_id):
            try:
                user = users.lookup().get(pk=user_id)
            except (ObjectDoesNotExist, ValueError, TypeError, ValidationError):
                return None
        return user if self.user_can_authenticate(user) else None

    # --- the user mirror: override to fill a project's own fields ---------------------

    def user_fields(self, profile: UserProfile) -> dict:
        """The user's fields that follow `profile`: {attname: value}."""
        return users.default_user_fields(profile)

    def create_user(self, profile: UserProfile, fields: dict):
        """Create and save the user for a backend user seen for the first time."""
        return users.default_create_user(profile, fields)

    def mirror(self, profile: UserProfile, *, current=None):
        """Return the user mirroring `profile` (accounts/users.py `mirror`), with these hooks."""
        return users.mirror(
            profile, current=current, user_fields=self.user_fields, create_user=self.create_user
        )

    @staticmethod
    def user_can_authenticate(user) -> bool:
        return getattr(user, "is_active", True)
