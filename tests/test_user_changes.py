"""Every kind of change to a user takes effect on that user's next request.

`AuthApiBackend.get_user` reads the row on each request (no cached copy), so
changes that bypass `User.save()` (QuerySet.update, the admin's bulk delete)
count as much as the ones that do not.
"""

import pytest
from django.contrib.admin.sites import site
from django.contrib.auth import get_user_model
from django.test import RequestFactory

from accounts.users import mirror
from tests import fakes

pytestmark = pytest.mark.django_db

User = get_user_model()


def open_dashboard(client):
    return client.get("/dashboard/")


def test_a_queryset_update_deactivating_the_user_signs_them_out_at_once(signed_in, client, backend):
    signed_in("admin", access=fakes.access_jwt())
    user = User.objects.get(backend_id="1")
    fakes.stub_me(backend, "admin")
    assert open_dashboard(client).status_code == 200

    User.objects.filter(pk=user.pk).update(is_active=False)

    response = open_dashboard(client)
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")


def test_a_queryset_update_of_the_name_shows_on_the_next_page(signed_in, client, backend):
    signed_in("admin", access=fakes.access_jwt())
    user = User.objects.get(backend_id="1")
    fakes.stub_me(backend, "admin")
    assert open_dashboard(client).status_code == 200

    User.objects.filter(pk=user.pk).update(first_name="Renamed-Ünïcode")

    assert "Renamed-Ünïcode" in open_dashboard(client).content.decode()


def test_the_admins_bulk_delete_signs_the_deleted_user_out(signed_in, client, backend):
    signed_in("evaluator", access=fakes.access_jwt(sub="2"))
    user = User.objects.get(backend_id="2")
    fakes.stub_me(backend, "evaluator")
    assert open_dashboard(client).status_code == 200

    admin_user = User.objects.create_superuser("local-admin", "root@example.com", "x")
    request = RequestFactory().post("/admin/accounts/user/")
    request.user = admin_user
    model_admin = site._registry[User]
    model_admin.delete_queryset(request, User.objects.filter(pk=user.pk))

    response = open_dashboard(client)
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")


def profile_of(who: str, **changes):
    from accounts.models import UserProfile

    data = fakes.PROFILES[who]
    return UserProfile(
        id=str(data["id"]),
        email=changes.get("email", data["email"]),
        first_name=data["firstName"],
        last_name=data["lastName"],
        roles=tuple(changes.get("roles", data["roles"])),
    )


def test_a_profile_matching_the_loaded_user_costs_no_query(django_assert_num_queries):
    user = fakes.make_user("admin")
    loaded = User.objects.get(pk=user.pk)
    with django_assert_num_queries(0):
        assert mirror(profile_of("admin"), current=loaded) is loaded


def test_a_changed_profile_is_written_even_with_the_loaded_user():
    user = fakes.make_user("evaluator")
    loaded = User.objects.get(pk=user.pk)
    synced = mirror(
        profile_of("evaluator", email="new-é@example.com", roles=["evaluator", "admin"]),
        current=loaded,
    )
    fresh = User.objects.get(pk=user.pk)
    assert (fresh.email, fresh.roles, fresh.is_superuser) == (
        "new-é@example.com",
        ["evaluator", "admin"],
        synced.is_superuser,
    )
    assert sorted(fresh.groups.values_list("name", flat=True)) == ["admin", "evaluator"]


def test_a_loaded_user_of_another_backend_id_is_not_taken_for_the_profile():
    admin = User.objects.get(pk=fakes.make_user("admin").pk)
    synced = mirror(profile_of("evaluator"), current=admin)
    assert synced.backend_id == "2"
    assert synced.pk != admin.pk


def test_deleting_a_user_deletes_their_sessions_too(signed_in, client, backend):
    from accounts.models import Session

    signed_in("admin", access=fakes.access_jwt())
    assert Session.objects.filter(user__backend_id="1").count() == 1
    User.objects.filter(backend_id="1").delete()
    assert Session.objects.count() == 0
    assert open_dashboard(client).status_code == 302


def test_a_user_row_removed_behind_the_orms_back_signs_the_session_out(signed_in, client, backend):
    """The session's join finds no user (no database constraint): nobody is signed in."""
    from django.db import connection

    signed_in("admin", access=fakes.access_jwt())
    fakes.stub_me(backend, "admin")
    assert open_dashboard(client).status_code == 200
    user = User.objects.get(backend_id="1")
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM accounts_user_groups WHERE user_id = %s", [user.pk])
        cursor.execute("DELETE FROM accounts_user WHERE id = %s", [user.pk])

    response = open_dashboard(client)
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")
    assert client.get("/api/users/me").status_code == 401
