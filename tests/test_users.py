"""accounts/users.py: any AUTH_USER_MODEL, its backend id and roles on it or beside it.

The suite's user model (the demo's accounts.User) keeps `backend_id` and
`roles` itself. The `identity` fixture makes the package keep them in
`accounts.BackendIdentity` instead, as it does for Django's own `auth.User`
or any model without those fields; tests/test_adoption.py signs in to a new
project with each kind of model for real.
"""

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AnonymousUser
from django.db import IntegrityError, connection
from django.test.utils import CaptureQueriesContext

from accounts import users
from accounts.backends import AuthApiBackend
from accounts.models import BackendIdentity, UserProfile
from tests import fakes

pytestmark = pytest.mark.django_db

User = get_user_model()


def profile(id="7", email="zoë@example.com", roles=("evaluator",), **names) -> UserProfile:
    return UserProfile(
        id=id,
        email=email,
        first_name=names.get("first_name", "Zoë"),
        last_name=names.get("last_name", "Ñandú"),
        roles=tuple(roles),
    )


@pytest.fixture(params=["on the user model", "beside it"])
def where(request, monkeypatch):
    """Run the test with the backend id and roles kept on the user model, then beside it."""
    if request.param == "beside it":
        monkeypatch.setattr(users, "on_user_model", lambda: False)
    return request.param


def test_a_first_sign_in_creates_a_user_no_password_can_open(where):
    user = users.mirror(profile())
    assert user.username == "api-7"
    assert not user.has_usable_password()
    assert (user.email, user.first_name, user.last_name) == ("zoë@example.com", "Zoë", "Ñandú")
    assert users.backend_id_of(user) == "7"
    assert users.roles_of(user) == ("evaluator",)
    assert sorted(user.groups.values_list("name", flat=True)) == ["evaluator"]
    assert BackendIdentity.objects.filter(user=user).exists() == (where == "beside it")
    if where == "beside it":
        assert User.objects.get(pk=user.pk).backend_id is None  # nothing on the model


def test_the_same_profile_with_the_loaded_user_costs_no_query(where, django_assert_num_queries):
    created = users.mirror(profile())
    loaded = users.lookup().get(pk=created.pk)
    with django_assert_num_queries(0):
        assert users.mirror(profile(), current=loaded) is loaded


def test_a_changed_profile_is_written_and_found_by_its_backend_id(where):
    first = users.mirror(profile())
    again = users.mirror(profile(email="new@example.com", roles=["admin", "évaluateur"]))
    assert again.pk == first.pk
    fresh = users.lookup().get(pk=first.pk)
    assert fresh.email == "new@example.com"
    assert users.roles_of(fresh) == ("admin", "évaluateur")
    assert fresh.is_staff and fresh.is_superuser  # "admin" is in AUTH_SUPERUSER_ROLES
    assert sorted(fresh.groups.values_list("name", flat=True)) == ["admin", "évaluateur"]
    assert User.objects.count() == 1


def test_a_loaded_user_of_another_backend_id_is_not_taken_for_the_profile(where):
    other = users.mirror(profile(id="8", email="o@example.com"))
    mine = users.mirror(profile(), current=other)
    assert mine.pk != other.pk
    assert users.backend_id_of(mine) == "7"


def test_a_second_first_sign_in_at_once_updates_the_firsts_user(where, monkeypatch):
    """The race of two first sign-ins: the loser's insert hits the unique key, and it
    mirrors onto the winner's user instead of failing."""
    winner = users.mirror(profile())
    real = users._mirror
    calls = []

    def lost_the_race(*args):
        calls.append(args)
        if len(calls) == 1:
            raise IntegrityError("duplicate key value violates unique constraint")
        return real(*args)

    monkeypatch.setattr(users, "_mirror", lost_the_race)
    late = users.mirror(profile(email="late@example.com", roles=["admin"]))
    assert late.pk == winner.pk
    assert len(calls) == 2
    fresh = users.lookup().get(pk=winner.pk)
    assert (fresh.email, users.roles_of(fresh)) == ("late@example.com", ("admin",))


def test_anyone_the_backend_does_not_know_has_no_id_and_no_roles(where):
    local = User.objects.create_user("local-admin", password="x" * 12)
    assert users.backend_id_of(local) is None
    assert users.roles_of(local) == ()
    assert users.backend_id_of(AnonymousUser()) is None
    assert users.roles_of(AnonymousUser()) == ()
    assert users.roles_of(None) == ()


def test_roles_of_another_shape_read_as_none(where):
    user = users.mirror(profile())
    holder = user if where == "on the user model" else user.backend_identity
    holder.roles = {"admin": True}
    assert users.roles_of(user) == ()
    holder.roles = ["admin", 3, None]
    assert users.roles_of(user) == ("admin",)


def test_fields_cut_to_the_models_lengths(where):
    user = users.mirror(profile(first_name="é" * 200, email="e" * 300))
    assert user.first_name == "é" * 150
    assert len(user.email) == 254


def test_the_lookup_reads_the_identity_with_the_user(where, django_assert_num_queries):
    created = users.mirror(profile())
    with django_assert_num_queries(1):
        loaded = users.lookup().get(pk=created.pk)
        assert users.roles_of(loaded) == ("evaluator",)
        assert users.backend_id_of(loaded) == "7"


def test_a_signed_in_page_reads_session_user_and_roles_in_one_query(
    where, client, backend, locmem_cache, django_assert_num_queries
):
    fakes.sign_in_client(client, "evaluator", access=fakes.access_jwt())
    client.get("/dashboard/")  # the first touch of the sessions page's row
    with django_assert_num_queries(1):
        page = client.get("/dashboard/")
    assert page.status_code == 200
    assert "evaluator" in page.content.decode()


# --- a project's own fields: the backend's hooks ----------------------------------------


class ShoutingBackend(AuthApiBackend):
    """A project's backend: last names in capitals, usernames from the email."""

    def user_fields(self, profile):
        return {**super().user_fields(profile), "last_name": profile.last_name.upper()}

    def create_user(self, profile, fields):
        fields = {**fields, "username": profile.email}
        return super().create_user(profile, fields)


def test_a_projects_hooks_fill_its_own_fields(where):
    backend = ShoutingBackend()
    user = backend.mirror(profile())
    assert (user.username, user.last_name) == ("zoë@example.com", "ÑANDÚ")
    loaded = users.lookup().get(pk=user.pk)
    assert backend.mirror(profile(), current=loaded) is loaded  # compared with the hook's
    assert users.mirror(profile(), current=loaded) is not loaded  # the default differs


def test_a_revalidation_mirrors_through_the_backend_that_signed_in(
    where, settings, client, backend, locmem_cache
):
    """Re-reading the user uses the session's own backend, hooks and all."""
    path = f"{__name__}.ShoutingBackend"
    settings.AUTHENTICATION_BACKENDS = [path, "accounts.backends.AuthApiBackend"]
    fakes.sign_in_client(client, "evaluator", access=fakes.access_jwt())
    session = client.session
    session["_auth_user_backend"] = path
    session.save()
    fakes.edit_record(client, validated_at=0)  # due to be re-read
    fakes.stub_me(backend, "evaluator")

    assert client.get("/dashboard/").status_code == 200

    user = users.lookup().get(**{users.backend_id_field(): "2"})
    assert user.last_name == fakes.PROFILES["evaluator"]["lastName"].upper()


def test_a_back_channel_sign_out_finds_the_users_sessions_wherever_the_id_is(where, locmem_cache):
    from accounts.usersessions import backchannel

    mine = users.mirror(profile())
    theirs = users.mirror(profile(id="8", email="o@example.com"))
    ended = fakes.user_session(mine, sid="s1")
    kept = fakes.user_session(theirs, sid="s1")

    assert backchannel.end_sessions(user_id="7", sid="s1") == 1

    assert fakes.live_session_keys() == {kept}
    assert ended not in fakes.live_session_keys()


def test_an_unchanged_profile_without_the_loaded_user_writes_nothing(where):
    users.mirror(profile())
    with CaptureQueriesContext(connection) as queries:
        users.mirror(profile())
    written = [q["sql"] for q in queries.captured_queries if not q["sql"].startswith("SELECT")]
    assert [sql for sql in written if "SAVEPOINT" not in sql] == []


class Someone:
    """A user-like object with only the attributes given."""

    def __init__(self, **attrs):
        self.__dict__.update(attrs)


@pytest.mark.parametrize(
    "who",
    [
        Someone(is_authenticated=False, backend_id="7", roles=["admin"]),
        Someone(backend_id="7", roles=["admin"]),  # says nothing of being signed in
    ],
    ids=["not signed in", "no is_authenticated"],
)
def test_whoever_is_not_signed_in_has_no_backend_id_and_no_roles(who):
    assert users.backend_id_of(who) is None
    assert users.roles_of(who) == ()


def test_a_signed_in_object_without_the_fields_has_no_backend_id_and_no_roles():
    who = Someone(is_authenticated=True)
    assert users.backend_id_of(who) is None
    assert users.roles_of(who) == ()


def username_of(name):
    return lambda: name


@pytest.mark.parametrize(
    ("who", "shown"),
    [
        (Someone(get_full_name=lambda: "Zoë Ñandú", email="z@example.com"), "Zoë Ñandú"),
        (Someone(get_full_name=lambda: "", email="z@example.com"), "z@example.com"),
        (Someone(email="z@example.com", get_username=username_of("api-7")), "z@example.com"),
        (Someone(get_full_name=lambda: "", email="", get_username=username_of("api-7")), "api-7"),
        (Someone(get_username=username_of("api-7")), "api-7"),  # no name, no email field
    ],
)
def test_a_user_is_named_by_full_name_then_email_then_username(who, shown):
    assert users.display_name(who) == shown


def test_a_model_without_some_profile_fields_gets_the_others(monkeypatch):
    from django.core.exceptions import FieldDoesNotExist

    class Field:
        def __init__(self, name, max_length=None):
            self.name = self.attname = name
            self.max_length = max_length

    class Meta:
        fields = {"email": Field("email", 5), "last_name": Field("last_name", 3)}

        def get_field(self, name):
            if name not in self.fields:
                raise FieldDoesNotExist(name)
            return self.fields[name]

    class NoFirstName:
        _meta = Meta()

        @staticmethod
        def get_email_field_name():
            return "email"

    monkeypatch.setattr(users, "get_user_model", lambda: NoFirstName)
    assert users.default_user_fields(profile()) == {"email": "zoë@e", "last_name": "Ñan"}


def test_role_names_too_long_for_a_group_name_are_cut_to_fit(where):
    user = users.mirror(profile(roles=["r" * 200]))
    assert [len(name) for name in user.groups.values_list("name", flat=True)] == [150]
    assert users.roles_of(user) == ("r" * 200,)  # the roles themselves as the backend said


def test_the_profile_a_user_mirrors_keeps_its_fields_with_new_roles():
    who = Someone(email="z@example.com", first_name="Zoë", last_name="Ñandú")
    assert users.profile_of(who, backend_id="7", roles=["admin"]) == UserProfile(
        id="7", email="z@example.com", first_name="Zoë", last_name="Ñandú", roles=("admin",)
    )
    assert users.profile_of(Someone(), backend_id="7", roles=()) == UserProfile(
        id="7", email="", first_name="", last_name="", roles=()
    )


def test_a_revalidation_of_an_unchanged_user_reads_no_user_row_again(
    client, backend, locmem_cache
):
    """The user the request loaded with its session is handed to the mirror, which finds it
    unchanged: no second read of the user, no write."""
    fakes.sign_in_client(client, "evaluator", access=fakes.access_jwt())
    client.get("/dashboard/")  # the sessions page's first touch
    fakes.edit_record(client, validated_at=0)  # due to be re-read
    fakes.stub_me(backend, "evaluator")
    with CaptureQueriesContext(connection) as queries:
        assert client.get("/dashboard/").status_code == 200
    assert len(fakes.calls_to(backend, "/users/me")) == 1  # it was re-read
    table = User._meta.db_table
    sqls = [q["sql"] for q in queries.captured_queries]
    assert [sql for sql in sqls if f'FROM "{table}"' in sql] == []  # no second read
    assert [sql for sql in sqls if sql.startswith(f'UPDATE "{table}"')] == []  # no write
