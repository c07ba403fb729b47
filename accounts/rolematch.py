"""Which roles a user holds, as the backend spells them: the one place roles are compared.

Exactly as the backend spells them, or regardless of case with
AUTH_ROLES_CASE_INSENSITIVE. Used by sign-in (AUTH_ALLOWED_ROLES), the user
mirror (AUTH_SUPERUSER_ROLES) and the role checks of pages (accounts/roles.py);
it imports nothing of Django's auth views, so models may use it.
"""

from collections.abc import Iterable

from .conf import conf


def shared_roles(have: Iterable[str], wanted: Iterable[str]) -> set[str]:
    """Return the roles of `wanted` that `have` holds, as `wanted` spells them.

    Exactly as the backend spells them, or regardless of case with
    AUTH_ROLES_CASE_INSENSITIVE (`Admin` holds `admin`).
    """
    if conf.roles_case_insensitive:
        held = {str(role).casefold() for role in have}
        return {role for role in wanted if role.casefold() in held}
    return set(wanted) & set(have)


def roles_allowed(roles) -> bool:
    """Return whether `roles` share one with AUTH_ALLOWED_ROLES (the signIn callback)."""
    return bool(shared_roles(roles, conf.allowed_roles))
