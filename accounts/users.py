"""Who a backend user is here: the contract between the package and AUTH_USER_MODEL.

The package signs people in to whatever `get_user_model()` is. Each user it
mirrors has the backend's id for them and the roles the backend last
reported, kept in one of two places:

- on the user model itself, when it has the fields `backend_id` (unique) and
  `roles` (a list): `accounts.models.BackendUserFields` adds both, and the
  demo's `accounts.User` uses it; or
- in `accounts.BackendIdentity`, a row per user beside any other model
  (Django's own `auth.User` included), the way django-allauth keeps a social
  account beside its user.

`backend_id_of`, `roles_of` and `lookup` read them wherever they are; the
backend's `mirror` (accounts/backends.py) writes them, with the `create_user`
and `update_user` hooks a project overrides to fill its own fields.
"""

from collections.abc import Callable
from functools import cache

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.exceptions import FieldDoesNotExist, ObjectDoesNotExist
from django.db import IntegrityError, transaction

from .conf import conf
from .models import BackendIdentity, UserProfile
from .rolematch import shared_roles

IDENTITY = "backend_identity"  # the related name of BackendIdentity.user


@cache
def on_user_model() -> bool:
    """Whether the user model keeps `backend_id` and `roles` itself."""
    meta = get_user_model()._meta
    try:
        meta.get_field("backend_id")
        meta.get_field("roles")
    except FieldDoesNotExist:
        return False
    return True


def backend_id_field() -> str:
    """The lookup from the user model to the backend id: for `filter()` and `select_related`."""
    return "backend_id" if on_user_model() else f"{IDENTITY}__backend_id"


def backend_id_of(user) -> str | None:
    """The backend's id for `user`; None for a user the backend does not know (a local one)."""
    if user is None or not getattr(user, "is_authenticated", False):
        return None
    if on_user_model():
        return getattr(user, "backend_id", None)
    identity = _identity(user)
    return identity.backend_id if identity is not None else None


def roles_of(user) -> tuple[str, ...]:
    """The roles the backend last reported for `user`; () for anyone else."""
    if user is None or not getattr(user, "is_authenticated", False):
        return ()
    if on_user_model():
        roles = getattr(user, "roles", None)
    else:
        identity = _identity(user)
        roles = identity.roles if identity is not None else None
    return tuple(r for r in roles if isinstance(r, str)) if isinstance(roles, list) else ()


def display_name(user) -> str:
    """How pages name `user`: the full name, else the email, else the username."""
    full_name = getattr(user, "get_full_name", None)
    email = getattr(user, get_user_model().get_email_field_name(), "")
    return (full_name() if callable(full_name) else "") or email or user.get_username()


def profile_of(user, *, backend_id: str, roles) -> UserProfile:
    """The profile `user` mirrors now, with `roles`: a refresh whose roles come from the
    access token (AUTH_ROLES_FROM=token) changes nothing else. Fields the model lacks are ""."""
    return UserProfile(
        id=backend_id,
        email=getattr(user, get_user_model().get_email_field_name(), ""),
        first_name=getattr(user, "first_name", ""),
        last_name=getattr(user, "last_name", ""),
        roles=tuple(roles),
    )


def lookup():
    """The user model's queryset, with the identity read in the same query when it has one."""
    users = get_user_model()._default_manager
    return users.all() if on_user_model() else users.select_related(IDENTITY)


def _identity(user):
    try:
        return getattr(user, IDENTITY)
    except (ObjectDoesNotExist, AttributeError):
        return None


# --- mirroring a profile: accounts/backends.py's `mirror`, with its hooks -----------------


def default_user_fields(profile: UserProfile) -> dict:
    """The user model's fields that follow the backend's profile, those the model has.

    Email and names where the model has them (cut to their length), and
    `is_staff` and `is_superuser` from AUTH_SUPERUSER_ROLES, so Django's admin
    follows the backend.
    """
    model = get_user_model()
    is_super = bool(shared_roles(profile.roles, conf.superuser_roles))
    wanted = {
        model.get_email_field_name(): profile.email,
        "first_name": profile.first_name,
        "last_name": profile.last_name,
        "is_staff": is_super,
        "is_superuser": is_super,
    }
    fields = {}
    for name, value in wanted.items():
        try:
            field = model._meta.get_field(name)
        except FieldDoesNotExist:
            continue
        if isinstance(value, str) and field.max_length:
            value = value[: field.max_length]
        fields[field.attname] = value
    return fields


def default_create_user(profile: UserProfile, fields: dict):
    """Create the user for a backend user seen for the first time, with `fields` set.

    Its username is `api-<backend id>` (or the email, for a model whose
    USERNAME_FIELD is the email); the password is unusable: this database can
    never sign anyone in on its own.
    """
    model = get_user_model()
    username = model.USERNAME_FIELD
    values = dict(fields)
    if username not in values:
        values[username] = f"api-{profile.id}"[: model._meta.get_field(username).max_length]
    user = model(**values)
    user.set_unusable_password()
    user.save()
    return user


def mirror(
    profile: UserProfile,
    *,
    current=None,
    user_fields: Callable[[UserProfile], dict] = default_user_fields,
    create_user: Callable = default_create_user,
):
    """Return the user mirroring `profile`, created or brought up to date.

    `current`, the user the request has loaded already, comes back as it is
    when it mirrors `profile` (the common case at every refresh): no query at
    all. Roles become the user's roles and groups of the same names (when the
    model has groups). Two first sign-ins of one person at once make one user:
    the second finds the first's.
    """
    wanted = user_fields(profile)
    roles = list(profile.roles)
    if (
        current is not None
        and backend_id_of(current) == profile.id
        and list(roles_of(current)) == roles
        and all(getattr(current, name) == value for name, value in wanted.items())
    ):
        return current
    try:
        with transaction.atomic():
            return _mirror(profile, wanted, roles, create_user)
    except IntegrityError:
        # Another request created this backend user meanwhile: update theirs.
        with transaction.atomic():
            return _mirror(profile, wanted, roles, create_user)


def _mirror(profile: UserProfile, wanted: dict, roles: list, create_user: Callable):
    user = lookup().select_for_update().filter(**{backend_id_field(): profile.id}).first()
    if user is None:
        if on_user_model():
            user = create_user(profile, {**wanted, "backend_id": profile.id, "roles": roles})
        else:
            user = create_user(profile, wanted)
            BackendIdentity.objects.create(user=user, backend_id=profile.id, roles=roles)
        _set_groups(user, roles)
        return user
    roles_changed = list(roles_of(user)) != roles
    changed = [name for name, value in wanted.items() if getattr(user, name) != value]
    for name in changed:
        setattr(user, name, wanted[name])
    if on_user_model():
        if changed or roles_changed:
            user.roles = roles
            user.save()
    else:
        if changed:
            user.save(update_fields=[get_user_model()._meta.get_field(n).name for n in changed])
        if roles_changed:
            identity = _identity(user)
            identity.roles = roles
            identity.save(update_fields=["roles"])
    if roles_changed:
        _set_groups(user, roles)
    return user


def _set_groups(user, roles: list) -> None:
    # Groups of the roles' names, for a model with groups (PermissionsMixin).
    if hasattr(user, "groups"):
        user.groups.set([Group.objects.get_or_create(name=role[:150])[0] for role in roles])
