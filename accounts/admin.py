"""Django's admin for the mirrored users: read what the backend said, deactivate, delete.

Names, email and roles come from the auth backend at every sign-in and
refresh, so they are read-only here; `is_active` is the local switch (a
deactivated user is signed out on their next request, accounts/backends.py).
The admin's own sign-in page is replaced by `login` (config/urls.py).
"""

from django.contrib import admin
from django.contrib.auth.admin import UserAdmin
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.utils.text import format_lazy
from django.utils.translation import gettext_lazy as _

from .conf import conf
from .models import BackendIdentity, PendingRevocation, User
from .roles import missing_role_message


def login(request: HttpRequest) -> HttpResponse:
    """`/admin/login/`: the app's sign-in form for visitors, the 403 page for the signed in.

    Django's admin sends everyone it turns away here, signed in or not. A
    signed-in user without staff rights (roles outside AUTH_SUPERUSER_ROLES)
    would meet an empty sign-in form, sign in again and be turned away again,
    in a loop: they get the 403 page naming the role the admin needs.
    """
    if request.user.is_authenticated:
        raise PermissionDenied(
            format_lazy(
                "{} {}",
                _("Django's admin site is for the site's administrators."),
                missing_role_message(conf.superuser_roles_list),
            )
        )
    return redirect_to_login(request.GET.get("next") or "/admin/")


class MirroredUserAdmin(UserAdmin):
    list_display = ("username", "email", "first_name", "last_name", "roles", "is_active")
    list_filter = ("is_active", "is_staff", "is_superuser")
    readonly_fields = ("backend_id", "roles", "email", "first_name", "last_name", "last_login")
    fieldsets = (
        (None, {"fields": ("username", "backend_id", "roles")}),
        ("Profile (from the auth backend)", {"fields": ("first_name", "last_name", "email")}),
        ("Access here", {"fields": ("is_active", "is_staff", "is_superuser", "groups")}),
        ("Dates", {"fields": ("last_login", "date_joined")}),
    )


# Only where the demo's user model is the project's (accounts/users.py: any model will do).
if not User._meta.swapped:
    admin.site.register(User, MirroredUserAdmin)


@admin.register(BackendIdentity)
class BackendIdentityAdmin(admin.ModelAdmin):
    """The backend's id and roles of users whose model does not keep them (accounts/users.py)."""

    list_display = ("user", "backend_id", "roles")
    search_fields = ("backend_id",)
    readonly_fields = ("user", "backend_id", "roles")

    def has_add_permission(self, request):
        return False


@admin.register(PendingRevocation)
class PendingRevocationAdmin(admin.ModelAdmin):
    """The sign-outs the backend has not received (accounts/revocations.py), read-only.

    The sealed pair is never shown. Deleting a row gives up on telling the
    backend; `manage.py revocations --flush` sends them all now.
    """

    list_display = (
        "backend_user_id",
        "queued_at",
        "attempts",
        "next_attempt_at",
        "expires_at",
        "last_error",
    )
    fields = list_display
    readonly_fields = list_display
    ordering = ("next_attempt_at",)

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
