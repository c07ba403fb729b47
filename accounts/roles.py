"""Role checks: one `user_has_role` for the decorator, the mixin and templates."""

from collections.abc import Iterable
from functools import wraps

from django.conf import settings
from django.contrib.auth import REDIRECT_FIELD_NAME
from django.contrib.auth.mixins import AccessMixin
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import ImproperlyConfigured, PermissionDenied
from django.shortcuts import resolve_url
from django.utils.text import format_lazy
from django.utils.translation import gettext_lazy as _

from .rolematch import shared_roles
from .users import roles_of


def user_has_role(user, *roles: str) -> bool:
    """Return whether a signed-in `user` holds at least one of `roles`."""
    return bool(shared_roles(roles_of(user), roles))


def missing_role_message(roles: Iterable[str]):
    """Return the 403 page's explanation, naming the roles that would do."""
    roles = tuple(roles)
    quoted = (
        _(" or ").join(f"“{role}”" for role in roles)
        if len(roles) < 3
        else ", ".join(f"“{role}”" for role in roles)
    )
    if len(roles) == 1:
        return format_lazy(_("This page needs the role {}."), quoted)
    return format_lazy(_("This page needs one of the roles {}."), quoted)


def role_required(*roles, login_url=None, redirect_field_name=REDIRECT_FIELD_NAME):
    """Decorate a view: anonymous → sign-in page with `next`; without a role → 403.

    Each of `roles` is a role name, or a callable returning role names, read
    at every request: `role_required(lambda: settings.DEMO_ADMIN_ROLES)`
    follows a setting (and `override_settings`).
    """
    if not roles:
        raise ImproperlyConfigured("role_required() needs at least one role.")

    def decorator(view):
        @wraps(view)
        def wrapper(request, *args, **kwargs):
            if not request.user.is_authenticated:
                return redirect_to_login(
                    request.get_full_path(),
                    resolve_url(login_url or settings.LOGIN_URL),
                    redirect_field_name,
                )
            wanted = resolve_roles(roles)
            if not user_has_role(request.user, *wanted):
                raise PermissionDenied(missing_role_message(wanted))
            return view(request, *args, **kwargs)

        return wrapper

    return decorator


def resolve_roles(roles: Iterable) -> tuple[str, ...]:
    """Return role names, each callable among `roles` replaced by the names it returns."""
    resolved: list[str] = []
    for role in roles:
        if callable(role):
            resolved.extend(role())
        else:
            resolved.append(role)
    if not resolved:
        raise ImproperlyConfigured("A role setting is empty: name at least one role.")
    return tuple(dict.fromkeys(resolved))


class RoleRequiredMixin(AccessMixin):
    """Class-based views: set `required_roles`; behaves like `role_required`."""

    required_roles: tuple[str, ...] = ()

    def get_required_roles(self) -> tuple[str, ...]:
        if not self.required_roles:
            raise ImproperlyConfigured(f"{type(self).__name__} needs required_roles.")
        return resolve_roles(self.required_roles)

    def get_permission_denied_message(self):
        return missing_role_message(self.get_required_roles())

    def dispatch(self, request, *args, **kwargs):
        if not user_has_role(request.user, *self.get_required_roles()):
            return self.handle_no_permission()
        return super().dispatch(request, *args, **kwargs)
