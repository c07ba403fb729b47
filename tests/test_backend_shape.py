"""The backend's shape declared in settings (accounts/shape.py) and the client acting on it.

In process, with `responses` playing the backend: where tokens are read from
and put, every roles shape `/users/me` gives, guest answers, the statuses of
a wrong password, roles from the access token, and errors that name the
setting that fixes them. Over real HTTP the same shapes run in
tests/test_shapes.py and tests/test_authcheck.py.
"""

import json
import logging
import time

import jwt
import pytest
from django.core.exceptions import ImproperlyConfigured

from accounts import rolematch, shape
from accounts.checks import check_auth_settings
from accounts.client import AuthApiClient, BackendAnswer, Tokens, carry
from accounts.conf import conf
from accounts.exceptions import (
    BackendProtocolError,
    InvalidCredentials,
    ShapeMismatch,
    TokensRefused,
)
from accounts.reasons import Reason
from accounts.roles import resolve_roles, user_has_role
from accounts.shape import MISSING, Place, UnreadableRoles, role_names
from tests import fakes
from tests.refreshing import refreshed_in_advance


def jwt_with(claims: dict) -> str:
    return jwt.encode(claims, "a-key-the-app-never-needs-to-know-32b", algorithm="HS256")


def answer(body=None, *, cookies=(), status=200) -> BackendAnswer:
    from accounts.cookies import parse_set_cookies

    content = b"" if body is None else json.dumps(body).encode()
    return BackendAnswer(status, content, {}, parse_set_cookies(cookies), what="POST /x")


# --- places -------------------------------------------------------------------


class TestPlaces:
    @pytest.mark.parametrize(
        ("written", "kind", "name"),
        [
            ("cookie:refresh_token", "cookie", "refresh_token"),
            ("json:data.tokens.access", "json", "data.tokens.access"),
            ("header:xc-auth", "header", "xc-auth"),
            (" Bearer ", "bearer", ""),
            ("none", "none", ""),
        ],
    )
    def test_a_place_is_read_from_its_written_form(self, written, kind, name):
        place = Place.parse(
            written, setting="S", kinds=("cookie", "json", "header", "bearer", "none")
        )
        assert (place.kind, place.name) == (kind, name)
        assert str(place) == (f"{kind}:{name}" if name else kind)

    @pytest.mark.parametrize(
        "written",
        [
            "cookie",
            "cookie:",
            "bearer:x",
            "json:a",
            "query:x",
            "",
            "header:Cookie",
            "header:x auth",
            "cookie:a;b",
            "header:é",
        ],
    )
    def test_a_place_that_is_none_of_the_kinds_names_its_setting(self, written):
        with pytest.raises(ImproperlyConfigured, match="^AUTH_X[ :]"):
            Place.parse(written, setting="AUTH_X", kinds=("cookie", "bearer", "header"))

    def test_a_json_path_with_an_empty_step_is_refused(self):
        with pytest.raises(ImproperlyConfigured, match="empty step"):
            Place.parse("json:a..b", setting="AUTH_X", kinds=("json",))

    def test_only_bearer_and_named_headers_fill_a_header(self):
        assert Place("bearer").header() == "authorization"
        assert Place("header", "XC-Auth").header() == "xc-auth"
        assert Place("cookie", "a").header() is None
        assert Place("json", "a").header() is None


class TestTheShorthands:
    """AUTH_BACKEND_TOKEN_TRANSPORT fills whatever the explicit settings leave empty."""

    def test_cookie(self):
        s = conf.shape
        assert [str(p) for p in (s.access_from, s.refresh_from, s.access_to, s.refresh_to)] == [
            "cookie:access_token",
            "cookie:refresh_token",
            "cookie:access_token",
            "cookie:refresh_token",
        ]
        assert (str(s.logout_access_to), str(s.logout_refresh_to)) == (
            "cookie:access_token",
            "cookie:refresh_token",
        )
        assert s.invalid_login_statuses == {400, 401, 403, 422}

    def test_bearer(self, settings):
        settings.AUTH_BACKEND_TOKEN_TRANSPORT = "bearer"
        assert str(conf.shape.access_to) == "bearer"
        assert str(conf.shape.access_from) == "cookie:access_token"

    def test_body(self, settings):
        settings.AUTH_BACKEND_TOKEN_TRANSPORT = "body"
        settings.AUTH_BODY_REFRESH_FIELD = "data.refresh"
        s = conf.shape
        assert (str(s.access_from), str(s.access_to)) == ("json:accessToken", "bearer")
        assert (str(s.refresh_from), str(s.refresh_to)) == (
            "json:data.refresh",
            "json:data.refresh",
        )

    def test_an_access_token_from_json_goes_out_as_bearer_unless_told(self, settings):
        settings.AUTH_ACCESS_TOKEN_FROM = "json:token"
        assert str(conf.shape.access_to) == "bearer"
        settings.AUTH_ACCESS_TOKEN_TO = "header:xc-auth"
        assert str(conf.shape.access_to) == "header:xc-auth"
        assert str(conf.shape.logout_access_to) == "header:xc-auth"

    def test_two_tokens_for_one_authorization_header_send_the_access_token_at_sign_out(
        self, settings
    ):
        settings.AUTH_ACCESS_TOKEN_TO = "bearer"
        settings.AUTH_REFRESH_TOKEN_TO = "bearer"
        assert (str(conf.shape.logout_access_to), str(conf.shape.logout_refresh_to)) == (
            "bearer",
            "none",
        )
        assert conf.shape.conflicts() == []
        settings.AUTH_LOGOUT_REFRESH_TOKEN_TO = "bearer"
        (problem,) = conf.shape.conflicts()
        assert "both tokens would go out as bearer" in problem
        assert "accounts.E012" in [e.id for e in check_auth_settings()]

    def test_the_same_cookie_for_both_at_sign_out_is_a_conflict(self, settings):
        settings.AUTH_LOGOUT_ACCESS_TOKEN_TO = "cookie:t"
        settings.AUTH_LOGOUT_REFRESH_TOKEN_TO = "cookie:t"
        assert conf.shape.conflicts()

    @pytest.mark.parametrize(
        ("setting", "value", "message"),
        [
            ("AUTH_ACCESS_TOKEN_FROM", "bearer", "AUTH_ACCESS_TOKEN_FROM"),
            ("AUTH_REFRESH_TOKEN_TO", "none", "AUTH_REFRESH_TOKEN_TO"),
            ("AUTH_ACCESS_TOKEN_TO", "json:x", "AUTH_ACCESS_TOKEN_TO"),
            ("AUTH_LOGIN_INVALID_STATUSES", ["401", "nope"], "must list HTTP statuses"),
            ("AUTH_LOGIN_INVALID_STATUSES", ["401", "429"], "429 always means throttled"),
            ("AUTH_LOGIN_INVALID_STATUSES", ["500"], "4xx"),
        ],
    )
    def test_a_setting_that_cannot_be_read_fails_the_system_check_naming_it(
        self, settings, setting, value, message
    ):
        setattr(settings, setting, value)
        with pytest.raises(ImproperlyConfigured, match=message):
            conf.shape  # noqa: B018 - reading it is the test
        errors = [e for e in check_auth_settings() if e.id == "accounts.E011"]
        assert errors and message in errors[0].msg

    def test_roles_from_must_be_me_or_token(self, settings):
        settings.AUTH_ROLES_FROM = "jwt"
        assert "accounts.E013" in [e.id for e in check_auth_settings()]
        settings.AUTH_ROLES_FROM = "token"
        assert "accounts.E013" not in [e.id for e in check_auth_settings()]


# --- JSON paths and roles -------------------------------------------------------------


class TestJsonPaths:
    def test_lookup_follows_objects_and_list_indexes(self):
        data = {"data": {"tokens": [{"access": "a"}]}, "x": None}
        assert shape.lookup(data, "data.tokens.0.access") == "a"
        assert shape.lookup(data, "x") is None
        assert shape.lookup(data, "data.tokens.1.access") is MISSING
        assert shape.lookup(data, "data.nope") is MISSING
        assert shape.lookup("str", "a") is MISSING

    def test_put_nests_without_touching_the_original(self):
        original = {"a": {"keep": 1}}
        assert shape.put(original, "a.b.c", "v") == {"a": {"keep": 1, "b": {"c": "v"}}}
        assert original == {"a": {"keep": 1}}

    def test_an_outline_shows_names_and_types_never_values(self):
        data = {"id": 7, "secret": "tok-123", "role": {"name": "Admin"}, "ok": True, "n": None}
        shown = shape.outline(data)
        assert (
            shown
            == '{"id": <int>, "secret": <str>, "role": {"name": <str>}, "ok": <bool>, "n": null}'
        )
        assert "tok-123" not in shown and "Admin" not in shown


class TestRoleShapes:
    @pytest.mark.parametrize(
        ("value", "names"),
        [
            (["admin", "evaluator"], ("admin", "evaluator")),
            ("admin", ("admin",)),
            ("org-level-creator,super", ("org-level-creator", "super")),
            ({"id": 1, "name": "Admin", "__entity": "RoleEntity"}, ("Admin",)),
            ([{"id": 1, "name": "Admin"}, {"id": 2, "name": "User"}], ("Admin", "User")),
            (
                {"org-level-creator": True, "super": True, "guest": False},
                ("org-level-creator", "super"),
            ),
            ({}, ()),
            ([], ()),
        ],
        ids=["list", "string", "comma-string", "object", "objects", "map", "empty-map", "empty"],
    )
    def test_every_shape_backends_use_gives_the_names(self, value, names):
        assert role_names(value) == names

    def test_the_name_key_of_role_objects_is_a_setting(self):
        assert role_names([{"slug": "admin"}], name_key="slug") == ("admin",)
        with pytest.raises(UnreadableRoles, match="a list holding"):
            role_names([{"slug": "admin"}])

    @pytest.mark.parametrize("value", [5, [1], {"id": 1, "title": "Admin"}, [None], True])
    def test_anything_else_is_unreadable_and_the_message_holds_no_value(self, value):
        with pytest.raises(UnreadableRoles) as info:
            role_names(value)
        assert "Admin" not in str(info.value)

    def test_candidates_name_the_paths_that_hold_roles(self):
        data = {"user": {"roles": ["x"]}, "role": {"id": 1, "name": "Admin"}, "title": "y"}
        assert shape.roles_candidates(data) == ["role", "user.roles"]


class TestRoleMatching:
    def test_names_match_as_spelled_unless_case_insensitive(self, settings, db):
        from accounts.models import User

        user = User(username="u", roles=["Admin"])
        assert not user_has_role(user, "admin")
        assert user_has_role(user, "Admin")
        settings.AUTH_ROLES_CASE_INSENSITIVE = True
        assert user_has_role(user, "admin")
        assert rolematch.shared_roles(["ADMIN", "x"], ["admin", "evaluator"]) == {"admin"}

    def test_role_settings_are_read_per_request(self, settings):
        settings.DEMO_ADMIN_ROLES = ["Admin"]
        assert resolve_roles([lambda: settings.DEMO_ADMIN_ROLES, "x", "x"]) == ("Admin", "x")
        settings.DEMO_ADMIN_ROLES = []
        with pytest.raises(ImproperlyConfigured, match="empty"):
            resolve_roles([lambda: settings.DEMO_ADMIN_ROLES])

    def test_the_superuser_role_as_the_backend_spells_it(self, settings):
        from accounts.models import UserProfile
        from accounts.users import default_user_fields

        profile = UserProfile(id="1", email="a@b.c", first_name="", last_name="", roles=("Admin",))
        assert default_user_fields(profile)["is_superuser"] is False
        settings.AUTH_ROLES_CASE_INSENSITIVE = True
        assert default_user_fields(profile)["is_superuser"] is True


# --- the client: tokens out ---------------------------------------------------------


class TestCredentials:
    def test_each_kind_of_place_carries_its_token(self):
        sent = carry(
            [
                (Place("cookie", "a"), "A"),
                (Place("cookie", "r"), "R"),
                (Place("header", "xc-auth"), "X"),
                (Place("json", "data.refreshToken"), "J"),
                (Place("bearer"), "B"),
                (Place("none"), "N"),
                (Place("bearer"), None),
            ]
        )
        assert sent.headers == {"Cookie": "a=A; r=R", "xc-auth": "X", "Authorization": "Bearer B"}
        assert sent.fields == {"data": {"refreshToken": "J"}}

    def test_refresh_as_bearer_sends_no_cookie_and_no_body(self, settings, backend):
        settings.AUTH_REFRESH_TOKEN_TO = "bearer"
        backend.post(f"{fakes.BASE}/auth/refresh", headers=fakes.token_headers("a-2", "r-2"))
        AuthApiClient().refresh("r-1")
        sent = backend.calls[0].request
        assert sent.headers["Authorization"] == "Bearer r-1"
        assert "Cookie" not in sent.headers and not sent.body

    def test_sign_out_sends_the_logout_places(self, settings, backend):
        settings.AUTH_ACCESS_TOKEN_TO = "header:xc-auth"
        settings.AUTH_LOGOUT_REFRESH_TOKEN_TO = "json:refresh"
        backend.post(f"{fakes.BASE}/auth/logout", status=204)
        AuthApiClient().logout(Tokens(access="a-1", refresh="r-1"))
        sent = backend.calls[0].request
        assert sent.headers["xc-auth"] == "a-1"
        assert json.loads(sent.body) == {"refresh": "r-1"}
        assert "Cookie" not in sent.headers

    def test_a_custom_access_header_carries_the_token_on_me(self, settings, backend):
        settings.AUTH_ACCESS_TOKEN_TO = "header:xc-auth"
        fakes.stub_me(backend)
        AuthApiClient().me(Tokens(access="a-1"))
        sent = backend.calls[0].request.headers
        assert sent["xc-auth"] == "a-1" and "Authorization" not in sent and "Cookie" not in sent


# --- the client: tokens in ----------------------------------------------------------


class TestTokensFrom:
    def test_mixed_an_access_token_in_json_and_a_refresh_cookie_with_expires_only(self, settings):
        settings.AUTH_ACCESS_TOKEN_FROM = "json:token"
        jwt = fakes.access_jwt(ttl=600, lifetime=600)
        hex_token = "ab" * 40
        issued = AuthApiClient().tokens_from(
            answer(
                {"token": jwt},
                cookies=[
                    f"refresh_token={hex_token}; Path=/; Expires=Wed, 06 Jan 2100 00:00:00 GMT; "
                    "HttpOnly",
                    "other=1; Path=/",
                ],
            ),
            "login",
        )
        by_name = {c.name: c for c in issued}
        assert set(by_name) == {"access_token", "refresh_token"}
        assert by_name["access_token"].value == jwt
        assert 590 <= by_name["access_token"].max_age <= 600
        assert by_name["refresh_token"].value == hex_token
        assert by_name["refresh_token"].max_age is None
        assert by_name["refresh_token"].expires.year == 2100

    def test_a_backend_cookie_is_kept_under_the_apps_own_name(self, settings):
        settings.AUTH_ACCESS_TOKEN_FROM = "cookie:jwt"
        settings.AUTH_REFRESH_TOKEN_FROM = "json:tokens.refresh"
        issued = AuthApiClient().tokens_from(
            answer({"tokens": {"refresh": "r-1"}}, cookies=["jwt=a-1; Max-Age=60"]), "login"
        )
        assert [(c.name, c.value, c.max_age) for c in issued] == [
            ("access_token", "a-1", 60),
            ("refresh_token", "r-1", 604800),
        ]

    @pytest.mark.parametrize(
        ("body", "problem"),
        [
            ([1, 2], "answered no JSON object, and json:token is where the access token should be"),
            ({"token": 5}, "answered an unusable access token at json:token: <int>"),
            ({"token": "has space"}, "answered an unusable access token at json:token: <str>"),
        ],
    )
    def test_a_json_place_that_holds_no_usable_token_says_where_it_looked(
        self, settings, body, problem
    ):
        settings.AUTH_ACCESS_TOKEN_FROM = "json:token"
        with pytest.raises(BackendProtocolError) as info:
            AuthApiClient().tokens_from(answer(body), "login")
        assert str(info.value) == f"POST /x {problem}"

    def test_a_sign_in_without_a_pair_names_the_setting_and_where_the_token_was(
        self, settings, backend
    ):
        backend.post(
            f"{fakes.BASE}/auth/login",
            json={"token": fakes.access_jwt(), "refreshToken": "r-1"},
        )
        logout = fakes.stub_logout(backend)
        with pytest.raises(ShapeMismatch) as info:
            AuthApiClient().login("a@example.com", "pw")
        message = str(info.value)
        assert message.startswith("POST /auth/login answered 200 with no usable access token at ")
        assert "set AUTH_ACCESS_TOKEN_FROM=json:token" in message
        assert info.value.setting == "AUTH_ACCESS_TOKEN_FROM"
        assert len(logout.calls) == 0, "it had no token to revoke"

    def test_half_a_pair_at_sign_in_is_revoked_and_named(self, settings, backend):
        settings.AUTH_ACCESS_TOKEN_FROM = "json:token"
        backend.post(
            f"{fakes.BASE}/auth/login",
            json={"token": fakes.access_jwt()},
            headers=[("Set-Cookie", "rt=r-1; Path=/")],
        )
        logout = fakes.stub_logout(backend)
        with pytest.raises(ShapeMismatch, match="no usable refresh token at cookie:refresh_token"):
            AuthApiClient().login("a@example.com", "pw")
        assert len(logout.calls) == 1


# --- sign-in statuses ---------------------------------------------------------------


class TestWrongPassword:
    @pytest.mark.parametrize("status", [400, 401, 403, 422])
    def test_each_default_status_is_a_wrong_password(self, backend, status):
        backend.post(
            f"{fakes.BASE}/auth/login",
            status=status,
            json={"status": 422, "errors": {"password": "incorrectPassword"}},
        )
        with pytest.raises(InvalidCredentials):
            AuthApiClient().login("a@example.com", "pw")

    def test_the_statuses_are_a_setting(self, settings, backend):
        settings.AUTH_LOGIN_INVALID_STATUSES = ["401"]
        backend.post(f"{fakes.BASE}/auth/login", status=422, json={})
        with pytest.raises(BackendProtocolError, match="^POST /auth/login answered 422$"):
            AuthApiClient().login("a@example.com", "pw")

    def test_a_404_names_the_path_setting(self, backend):
        backend.post(f"{fakes.BASE}/auth/login", status=404, json={})
        with pytest.raises(BackendProtocolError, match="answered 404: is AUTH_LOGIN_PATH the"):
            AuthApiClient().login("a@example.com", "pw")

    def test_a_422_at_sign_in_is_the_forms_error_not_a_service_page(self, client, db, backend):
        backend.post(
            f"{fakes.BASE}/auth/login",
            status=422,
            json={"status": 422, "errors": {"password": "incorrectPassword"}},
        )
        page = client.post("/accounts/login/", {"email": "a@example.com", "password": "x"})
        assert page.status_code == 200
        assert "Invalid email or password" in page.content.decode()


# --- /users/me --------------------------------------------------------------------------


BROCODERS_ME = {
    "id": 1,
    "email": "admin@example.com",
    "firstName": "Super",
    "lastName": "Admin",
    "role": {"id": 1, "name": "Admin", "__entity": "RoleEntity"},
}


class TestProfile:
    def test_paths_say_where_each_field_is(self, settings):
        settings.AUTH_ME_ID_PATH = "user.uuid"
        settings.AUTH_ME_EMAIL_PATH = "user.mail"
        settings.AUTH_ME_FIRST_NAME_PATH = "user.name.given"
        settings.AUTH_ME_LAST_NAME_PATH = "user.name.family"
        settings.AUTH_ME_ROLES_PATH = "user.groups"
        profile = AuthApiClient().profile_from(
            {
                "user": {
                    "uuid": "u-1",
                    "mail": "a@b.c",
                    "name": {"given": "Zoë", "family": "Ångström"},
                    "groups": [{"name": "editor"}],
                }
            }
        )
        assert (
            profile.id,
            profile.email,
            profile.first_name,
            profile.last_name,
            profile.roles,
        ) == (
            "u-1",
            "a@b.c",
            "Zoë",
            "Ångström",
            ("editor",),
        )

    def test_roles_as_an_object_need_the_roles_path_and_the_error_says_so(self):
        with pytest.raises(ShapeMismatch) as info:
            AuthApiClient().profile_from(BROCODERS_ME)
        assert (
            "GET /users/me's 'roles' holds no roles; found role: set AUTH_ME_ROLES_PATH=role"
            in (str(info.value))
        )

    def test_roles_as_an_object_with_the_roles_path(self, settings):
        settings.AUTH_ME_ROLES_PATH = "role"
        assert AuthApiClient().profile_from(BROCODERS_ME).roles == ("Admin",)

    def test_null_roles_are_no_roles(self):
        assert AuthApiClient().profile_from({"id": 1, "email": "a@b.c", "roles": None}).roles == ()

    def test_roles_from_the_access_token(self, settings):
        settings.AUTH_ROLES_FROM = "token"
        settings.AUTH_TOKEN_ROLES_CLAIM = "realm.roles"
        token = jwt_with({"realm": {"roles": ["evaluator"]}, "exp": 2**31})
        profile = AuthApiClient().profile_from(
            {"id": 1, "email": "a@b.c", "roles": ["admin"]}, access_token=token
        )
        assert profile.roles == ("evaluator",), "the token's, not /users/me's"

    def test_roles_from_a_token_without_them_name_the_claim(self, settings):
        settings.AUTH_ROLES_FROM = "token"
        token = jwt_with({"role": {"name": "Admin"}, "exp": 2**31})
        with pytest.raises(ShapeMismatch, match="set AUTH_TOKEN_ROLES_CLAIM=role"):
            AuthApiClient().token_roles(token)
        with pytest.raises(ShapeMismatch, match="no JWT"):
            AuthApiClient().token_roles("opaque")


class TestGuestAnswers:
    """`/users/me` answering 200 without an id (NocoDB's guest) means the token was not taken."""

    GUEST = {"roles": {"guest": True}}

    def test_with_a_session_it_renews_once_and_replays(self, backend):
        fakes.stub_me(backend, json=self.GUEST)
        fakes.stub_me(backend, json=fakes.PROFILES["admin"])
        source = fakes.Source(Tokens(access="old"), renewed=Tokens(access="new"))
        profile = AuthApiClient().me(source)
        assert profile.email == fakes.PROFILES["admin"]["email"]
        assert source.renewals == 1

    def test_twice_is_refused_for_good(self, backend):
        fakes.stub_me(backend, json=self.GUEST)
        source = fakes.Source(Tokens(access="old"), renewed=Tokens(access="new"))
        with pytest.raises(TokensRefused) as info:
            AuthApiClient().me(source)
        assert info.value.reason == Reason.REJECTED_TWICE

    def test_at_sign_in_it_names_how_the_token_went_out(self, backend, settings):
        settings.AUTH_ACCESS_TOKEN_FROM = "json:token"
        fakes.stub_me(backend, json=self.GUEST)
        with pytest.raises(ShapeMismatch) as info:
            AuthApiClient().me(Tokens(access="a"))
        assert "answered 200 without an id at 'id' (a guest answer)" in str(info.value)
        assert "sent as bearer; check AUTH_ACCESS_TOKEN_TO" in str(info.value)

    def test_the_proxy_relays_a_guest_answer_as_it_is(self, signed_in, backend):
        client = signed_in(access=fakes.access_jwt())
        fakes.stub_me(backend, json=self.GUEST)
        response = client.get("/api/users/me")
        assert response.status_code == 200
        assert response.json() == self.GUEST
        assert not [c for c in backend.calls if c.request.url.endswith("/auth/refresh")]

    def test_an_answer_with_an_id_is_no_guest_whatever_else_it_lacks(self):
        client = AuthApiClient()
        assert not client.rejected(answer({"id": 0}), conf.me_path)
        assert client.rejected(answer({"id": ""}), conf.me_path)
        assert client.rejected(answer({"id": None}), conf.me_path)
        assert not client.rejected(answer({}, status=201), conf.me_path)
        assert not client.rejected(answer({}), "/users/other")
        assert client.rejected(answer({}, status=401), "/users/other")


# --- what the operator sees -------------------------------------------------------------


class TestTheOperatorIsTold:
    def test_a_sign_in_that_does_not_fit_logs_the_setting_and_shows_on_the_health_page(
        self, client, db, backend, caplog, locmem_cache
    ):
        fakes.stub_login(backend)
        fakes.stub_me(backend, json=BROCODERS_ME)
        fakes.stub_logout(backend)
        page = client.post("/accounts/login/", {"email": "a@example.com", "password": "x"})
        assert page.status_code == 502
        assert "This account does not have access" not in page.content.decode()
        (line,) = [r.getMessage() for r in caplog.records if r.name == "accounts.views"]
        assert "set AUTH_ME_ROLES_PATH=role" in line
        kept = shape.reported()
        assert kept["setting"] == "AUTH_ME_ROLES_PATH"
        assert "found role" in kept["message"]

    def test_a_profile_that_stops_fitting_at_a_refresh_keeps_the_session_and_is_shown(
        self, signed_in, backend, locmem_cache, caplog
    ):
        client = signed_in(access=fakes.access_jwt(ttl=-10))
        fakes.stub_refresh(backend, access=fakes.access_jwt())
        fakes.stub_me(backend, json=BROCODERS_ME)
        with caplog.at_level(logging.INFO, logger="accounts.renewal"):
            response = client.post("/accounts/refresh/", headers={"Accept": "application/json"})
        assert response.status_code in (200, 204)
        assert fakes.calls_to(backend, "/auth/refresh")
        assert "_auth_user_id" in client.session
        kept = shape.reported()
        assert kept["setting"] == "AUTH_ME_ROLES_PATH"
        assert f"Profile not re-read after refresh ({kept['message']}); keeping the session" in (
            caplog.messages
        )

    def test_a_profile_that_stops_fitting_at_a_revalidation_is_shown(
        self, signed_in, backend, locmem_cache
    ):
        client = signed_in(access=fakes.access_jwt())
        fakes.edit_record(client, validated_at=0)
        fakes.stub_me(backend, json=BROCODERS_ME)
        assert client.get("/dashboard/").status_code == 200
        assert fakes.calls_to(backend, "/users/me")
        assert shape.reported()["setting"] == "AUTH_ME_ROLES_PATH"

    def test_the_health_page_shows_the_last_mismatch(self, signed_in, backend, locmem_cache):
        client = signed_in(access=fakes.access_jwt())
        shape.report(
            ShapeMismatch("GET /users/me's 'roles' holds no roles", "AUTH_ME_ROLES_PATH", ["role"])
        )
        page = client.get("/dashboard/admin/").content.decode()
        assert 'id="shape-mismatch"' in page
        assert "set AUTH_ME_ROLES_PATH=role" in page

    def test_only_shape_mismatches_are_kept(self, locmem_cache):
        shape.report(BackendProtocolError("GET /x answered 418"))
        assert shape.reported() is None


# --- the demo's role pages ---------------------------------------------------------------


def test_the_demo_pages_take_their_roles_from_settings(settings, client, db, backend):
    # The navigation follows the demo's settings; the admin's page is the
    # operations app's health page, gated by AUTH_OPS_ROLES.
    settings.DEMO_ADMIN_ROLES = settings.AUTH_OPS_ROLES = ["Admin"]
    settings.DEMO_EVALUATION_ROLES = ["Evaluator", "Admin"]
    settings.AUTH_ALLOWED_ROLES = ["Admin", "Evaluator"]
    fakes.sign_in_client(client, "admin", access=fakes.access_jwt())
    from accounts.models import User

    User.objects.filter(backend_id="1").update(roles=["Admin"])
    admin = client.get("/dashboard/admin/")
    assert admin.status_code == 200
    assert "Only users with the role “Admin” can open this page." in admin.content.decode()
    nav = client.get("/dashboard/").content.decode()
    assert 'href="/dashboard/evaluations/"' in nav and 'href="/dashboard/admin/"' in nav


# --- the adapter API's documented example (docs/adapter.md) -------------------------------


def documented_adapter():
    """The example class of docs/adapter.md, run as it is written there."""
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "adapter.md").read_text()
    code = text.split("```python\n", 1)[1].split("```", 1)[0]
    namespace: dict = {}
    exec(compile(code, "docs/adapter.md", "exec"), namespace)  # noqa: S102 - our own docs
    return namespace["SessionJsonClient"]


def test_the_documented_adapter_signs_in_refreshes_and_adds_its_header(settings, backend):
    settings.AUTH_REFRESH_TOKEN_TO = "json:renew"
    client = documented_adapter()()
    backend.post(
        f"{fakes.BASE}/auth/login",
        json={"session": {"jwt": "opaque-access-1", "renew": "renew-1", "ttl": 900}},
    )
    backend.post(
        f"{fakes.BASE}/auth/refresh", json={"session": {"jwt": "opaque-access-2", "ttl": 900}}
    )
    issued = {c.name: c for c in client.login("a@example.com", "pw")}
    assert (issued["access_token"].value, issued["access_token"].max_age) == (
        "opaque-access-1",
        900,
    )
    assert issued["refresh_token"].value == "renew-1"
    renewed = client.refresh("renew-1")
    assert [c.name for c in renewed] == ["access_token"]
    login, refresh = (call.request for call in backend.calls)
    assert login.headers["X-Tenant"] == "acme"
    assert json.loads(refresh.body) == {"renew": "renew-1"}
    backend.post(f"{fakes.BASE}/auth/login", json={"nope": 1})
    with pytest.raises(ShapeMismatch, match="answered no session.jwt"):
        client.login("a@example.com", "pw")


# --- what mutation testing of accounts/shape.py showed unguarded ---------------------------


class TestMessagesAndLimits:
    def test_a_bad_place_says_how_to_write_one(self):
        with pytest.raises(ImproperlyConfigured) as info:
            Place.parse("query:x", setting="AUTH_X", kinds=("cookie", "bearer", "none"))
        assert str(info.value) == (
            "AUTH_X is 'query:x'; write `cookie:<name>` or `bearer` or `none`."
        )

    @pytest.mark.parametrize("header", ["Content-Type", "content-length", "COOKIE"])
    def test_a_header_the_app_sets_itself_is_refused(self, header):
        with pytest.raises(ImproperlyConfigured, match=f"names the {header} header"):
            Place.parse(f"header:{header}", setting="AUTH_X", kinds=("header",))

    @pytest.mark.parametrize(
        ("setting", "value"),
        [
            ("AUTH_ACCESS_TOKEN_FROM", "bearer"),
            ("AUTH_REFRESH_TOKEN_FROM", "bearer"),
            ("AUTH_ACCESS_TOKEN_TO", "json:a"),
            ("AUTH_REFRESH_TOKEN_TO", "none"),
            ("AUTH_LOGOUT_ACCESS_TOKEN_TO", "json:a"),
            ("AUTH_LOGOUT_REFRESH_TOKEN_TO", "query:a"),
        ],
    )
    def test_each_place_setting_is_named_in_its_own_error(self, settings, setting, value):
        setattr(settings, setting, value)
        with pytest.raises(ImproperlyConfigured, match=f"^{setting} is "):
            conf.shape  # noqa: B018

    def test_the_statuses_error_says_what_may_be_listed(self, settings):
        settings.AUTH_LOGIN_INVALID_STATUSES = ["302"]
        with pytest.raises(ImproperlyConfigured) as info:
            conf.shape  # noqa: B018
        assert str(info.value) == (
            "AUTH_LOGIN_INVALID_STATUSES must list 4xx statuses other than 429 (got [302]); "
            "429 always means throttled."
        )

    def test_the_conflict_says_which_settings_resolve_it(self, settings):
        settings.AUTH_LOGOUT_ACCESS_TOKEN_TO = "header:x-token"
        settings.AUTH_LOGOUT_REFRESH_TOKEN_TO = "header:X-Token"
        assert conf.shape.conflicts() == [
            "on sign-out both tokens would go out as header:x-token: set "
            "AUTH_LOGOUT_ACCESS_TOKEN_TO or AUTH_LOGOUT_REFRESH_TOKEN_TO to `none`"
        ]

    def test_paths_go_four_levels_deep(self):
        data = {"a": {"b": {"c": {"d": {"e": 1}}}}}
        assert [p for p, _ in shape.paths(data)] == ["a", "a.b", "a.b.c", "a.b.c.d"]

    def test_an_outline_stops_at_three_levels_and_twelve_keys(self):
        assert shape.outline({"a": {"b": {"c": {"d": 1}}}}) == '{"a": {"b": {"c": {…}}}}'
        wide = shape.outline({f"k{i}": i for i in range(13)})
        assert wide.endswith('"k11": <int>, …}') and '"k12"' not in wide
        assert shape.outline({f"k{i}": i for i in range(12)}).endswith('"k11": <int>}')

    def test_an_outline_of_a_list_shows_its_first_item_and_whether_there_are_more(self):
        assert shape.outline([{"a": [1, 2]}, 3]) == '[{"a": [<int>, …]}, …]'
        assert shape.outline([[[[1]]]]) == "[[[[…]]]]"
        assert shape.outline(["x"]) == "[<str>]"

    def test_an_object_with_an_empty_name_is_no_role(self):
        assert role_names({"id": 1, "name": ""}) == ()

    @pytest.mark.parametrize(
        ("value", "message"),
        [
            (
                {"id": 1, "title": "Admin"},
                'an object {"id": <int>, "title": <str>} with no '
                "'name' name and not a map of role to true",
            ),
            (5, "<int>"),
            (None, "null"),
        ],
    )
    def test_unreadable_roles_say_what_they_were(self, value, message):
        with pytest.raises(UnreadableRoles) as info:
            role_names(value)
        assert str(info.value) == message

    def test_candidates_cover_groups_permissions_and_authorities_at_any_depth(self):
        data = {
            "user": {"profile": {"groups": ["g"]}},
            "permissions": ["p"],
            "x": {"authorities": "a"},
            "roleId": 5,
            "role": "r",
        }
        assert shape.roles_candidates(data) == [
            "role",
            "permissions",
            "x.authorities",
            "user.profile.groups",
        ]

    def test_an_unreadable_candidate_does_not_hide_the_next(self):
        data = {"roles": [1], "user": {"roles": ["admin"]}}
        assert shape.roles_candidates(data) == ["user.roles"]

    def test_at_one_depth_a_role_named_path_comes_first(self):
        assert shape.roles_candidates({"groups": ["g"], "myRoles": ["r"]}) == ["myRoles", "groups"]


class TestTheReport:
    def test_it_is_kept_a_day(self, monkeypatch):
        kept = {}

        class Recorder:
            def set(self, key, value, timeout):
                kept.update(key=key, value=value, timeout=timeout)

        monkeypatch.setattr(shape, "cache", Recorder())
        shape.report(ShapeMismatch("x", "AUTH_ME_ID_PATH"))
        assert kept["key"] == "accounts:shape-mismatch"
        assert kept["timeout"] == 86400
        assert kept["value"]["setting"] == "AUTH_ME_ID_PATH"

    def test_a_broken_cache_is_logged_and_never_raises(self, monkeypatch, caplog):
        class Broken:
            def set(self, *args):
                raise ConnectionError("down")

            def get(self, *args):
                raise ConnectionError("down")

        monkeypatch.setattr(shape, "cache", Broken())
        shape.report(ShapeMismatch("x", "AUTH_ME_ID_PATH"))
        assert shape.reported() is None
        assert [r.getMessage() for r in caplog.records if r.name == "accounts.shape"] == [
            "The backend shape mismatch could not be kept for the health page"
        ]

    def test_anything_but_a_kept_report_reads_as_none(self, monkeypatch):
        class Odd:
            def get(self, key):
                return "not a report"

        monkeypatch.setattr(shape, "cache", Odd())
        assert shape.reported() is None


# --- roles from the access token, across a refresh ------------------------------------------


def jwt_for(roles, *, ttl: int = 1800) -> str:
    now = int(time.time())
    return jwt_with({"sub": "1", "roles": roles, "iat": now + ttl - 1800, "exp": now + ttl})


@pytest.mark.usefixtures("settle")
class TestRolesFromTheToken:
    @pytest.fixture(autouse=True)
    def from_token(self, settings):
        settings.AUTH_ROLES_FROM = "token"

    def test_a_refresh_reads_them_from_the_new_token_without_a_profile_call(
        self, signed_in, backend, settle
    ):
        client = signed_in(access=jwt_for(["admin"], ttl=-5))
        fakes.stub_refresh(backend, access=jwt_for(["admin", "evaluator"]))
        refreshed_in_advance(client, settle)
        page = client.get("/dashboard/")
        assert page.status_code == 200
        assert fakes.calls_to(backend, "/users/me") == []
        from accounts.models import User

        user = User.objects.get(backend_id="1")
        assert user.roles == ["admin", "evaluator"]
        # Only the roles change: the names and email the sign-in mirrored stay.
        profile = fakes.PROFILES["admin"]
        assert (user.email, user.first_name, user.last_name) == (
            profile["email"],
            profile["firstName"],
            profile["lastName"],
        )
        assert user.first_name and user.email

    def test_a_role_lost_in_the_new_token_ends_the_session(self, signed_in, backend, settle):
        client = signed_in(access=jwt_for(["admin"], ttl=-5))
        fakes.stub_refresh(backend, access=jwt_for(["viewer"]))
        refreshed_in_advance(client, settle)
        page = client.get("/dashboard/")
        assert page.status_code == 302
        assert fakes.calls_to(backend, "/users/me") == []

    def test_with_roles_from_me_a_refresh_reads_the_profile(
        self, signed_in, backend, settings, settle
    ):
        settings.AUTH_ROLES_FROM = "me"
        client = signed_in(access=jwt_for(["admin"], ttl=-5))
        new = jwt_for(["admin"])
        fakes.stub_refresh(backend, access=new)
        fakes.stub_me_by_token(backend, {new: "admin"})
        refreshed_in_advance(client, settle)
        assert client.get("/dashboard/").status_code == 200
        assert len(fakes.calls_to(backend, "/users/me")) == 1


# --- what mutation testing of the client's new code showed unguarded ------------------------


class TestWhereTokensMayBe:
    """`token_places`, `found_in` and the candidates: what errors and authcheck propose."""

    def test_cookies_and_json_fields_that_may_hold_each_token(self):
        from accounts.client import token_places

        found = answer(
            {
                "token": "t",
                "Refresh": {"RefreshToken": "r"},
                "tokenExpires": 5,
                "accessTokenExpiresAt": "2026",
                "user": {"name": "x"},
            },
            cookies=["JWT=a", "Refresh_Token=b", "session=c", "x-access=d"],
        )
        assert token_places(found, "access") == ["cookie:JWT", "cookie:x-access", "json:token"]
        assert token_places(found, "refresh") == [
            "cookie:Refresh_Token",
            "json:Refresh.RefreshToken",
        ]
        assert token_places(answer([1]), "access") == []

    def test_what_an_answer_held_names_and_types_only(self):
        from accounts.client import found_in

        held = answer({"token": "secret-value"}, cookies=["b=1", "a=2", "gone=; Max-Age=0"])
        assert found_in(held) == 'cookies a, b and JSON {"token": <str>}'
        assert found_in(BackendAnswer(200, b"<html>", {}, [])) == "no cookies and 6 bytes, not JSON"

    def test_a_refresh_answer_without_an_access_token_names_the_setting(self, backend, settings):
        settings.AUTH_ACCESS_TOKEN_FROM = "json:token"
        backend.post(f"{fakes.BASE}/auth/refresh", json={"accessToken": "a-2"})
        with pytest.raises(ShapeMismatch) as info:
            AuthApiClient().refresh("r-1")
        assert str(info.value) == (
            "POST /auth/refresh answered 200 with no usable access token at json:token; it held "
            'no cookies and JSON {"accessToken": <str>}; found json:accessToken: set '
            "AUTH_ACCESS_TOKEN_FROM=json:accessToken"
        )
        assert info.value.maybe_processed is True

    def test_a_sign_in_without_the_refresh_token_names_its_setting(self, backend, settings):
        settings.AUTH_ACCESS_TOKEN_FROM = "json:token"
        backend.post(f"{fakes.BASE}/auth/login", json={"token": "a-1", "refresh": "r-1"})
        fakes.stub_logout(backend)
        with pytest.raises(ShapeMismatch) as info:
            AuthApiClient().login("a@example.com", "pw", client_ip="203.0.113.5")
        assert info.value.setting == "AUTH_REFRESH_TOKEN_FROM"
        assert "set AUTH_REFRESH_TOKEN_FROM=json:refresh" in str(info.value)
        login, logout = (call.request for call in backend.calls)
        assert login.headers["X-Forwarded-For"] == "203.0.113.5"
        assert logout.headers["Authorization"] == "Bearer a-1", "the half it had is revoked"

    def test_a_revocation_that_fails_does_not_hide_the_mismatch(self, backend, settings):
        settings.AUTH_ACCESS_TOKEN_FROM = "json:token"
        backend.post(f"{fakes.BASE}/auth/login", json={"token": "a-1"})
        backend.post(f"{fakes.BASE}/auth/logout", status=503)
        with pytest.raises(ShapeMismatch, match="no usable refresh token"):
            AuthApiClient().login("a@example.com", "pw")

    @pytest.mark.parametrize(
        ("path", "setting"),
        [
            ("/auth/login", "AUTH_LOGIN_PATH"),
            ("/auth/refresh", "AUTH_REFRESH_PATH"),
            ("/auth/logout", "AUTH_LOGOUT_PATH"),
            ("/users/me", "AUTH_ME_PATH"),
        ],
    )
    def test_a_404_names_each_path_setting(self, path, setting):
        with pytest.raises(BackendProtocolError) as info:
            AuthApiClient._expect_success(answer({}, status=404), path)
        assert str(info.value) == f"POST /x answered 404: is {setting} the backend's path?"

    def test_a_404_elsewhere_is_only_a_status(self):
        with pytest.raises(BackendProtocolError, match=r"^POST /x answered 404$"):
            AuthApiClient._expect_success(answer({}, status=404), "/users/notes")

    def test_me_takes_200_only(self, backend):
        fakes.stub_me(backend, status=201)
        with pytest.raises(BackendProtocolError, match="answered 201"):
            AuthApiClient().me(Tokens(access="a"))

    def test_an_unusable_json_token_names_which_token(self, settings):
        settings.AUTH_REFRESH_TOKEN_FROM = "json:refresh"
        with pytest.raises(BackendProtocolError, match="an unusable refresh token at json:refresh"):
            AuthApiClient().tokens_from(answer({"refresh": 7}, cookies=["access_token=a"]), "login")


class TestProfileCandidates:
    @pytest.mark.parametrize("key", ["_id", "uuid", "sub", "id"])
    def test_an_id_elsewhere_is_proposed(self, settings, key):
        settings.AUTH_ME_ID_PATH = "userId"
        with pytest.raises(ShapeMismatch) as info:
            AuthApiClient().profile_from({"user": {key: "u-1"}, "email": "a@b.c", "roles": []})
        assert f"set AUTH_ME_ID_PATH=user.{key}" in str(info.value)

    def test_an_empty_id_is_no_id(self):
        with pytest.raises(ShapeMismatch, match="no usable id"):
            AuthApiClient().profile_from({"id": "", "email": "a@b.c", "roles": []})

    @pytest.mark.parametrize("key", ["email", "username"])
    def test_an_email_elsewhere_is_proposed_nearest_first(self, key):
        data = {"id": 1, "profile": {key: "a@b.c"}, "deep": {"er": {key: "x"}}, "roles": []}
        with pytest.raises(ShapeMismatch) as info:
            AuthApiClient().profile_from(data)
        assert f"found profile.{key}, deep.er.{key}: set AUTH_ME_EMAIL_PATH=profile.{key}" in str(
            info.value
        )

    def test_an_email_nowhere_shows_the_outline(self):
        with pytest.raises(ShapeMismatch) as info:
            AuthApiClient().profile_from({"id": 1, "roles": []})
        assert str(info.value).endswith(
            'check AUTH_ME_EMAIL_PATH; the answer was {"id": <int>, "roles": []}'
        )

    def test_roles_missing_show_the_outline(self):
        with pytest.raises(ShapeMismatch) as info:
            AuthApiClient().profile_from({"id": 1, "email": "a@b.c"})
        assert str(info.value).endswith('the answer was {"id": <int>, "email": <str>}')

    def test_the_role_name_key_setting_is_used(self, settings):
        settings.AUTH_ROLE_NAME_KEY = "slug"
        profile = AuthApiClient().profile_from(
            {"id": 1, "email": "a@b.c", "roles": [{"slug": "x"}]}
        )
        assert profile.roles == ("x",)

    def test_a_role_string_of_no_known_shape_names_the_roles_path(self):
        with pytest.raises(ShapeMismatch) as info:
            AuthApiClient().profile_from({"id": 1, "email": "a@b.c", "roles": 5})
        assert info.value.setting == "AUTH_ME_ROLES_PATH"

    def test_roles_from_a_token_that_is_no_jwt_point_at_me(self, settings):
        settings.AUTH_ROLES_FROM = "token"
        with pytest.raises(ShapeMismatch) as info:
            AuthApiClient().profile_from(
                {"id": 1, "email": "a@b.c", "roles": ["x"]}, access_token="opaque"
            )
        assert str(info.value) == (
            "the access token is no JWT to read roles from (AUTH_ROLES_FROM=token); found me: "
            "set AUTH_ROLES_FROM=me"
        )
        with pytest.raises(ShapeMismatch, match=r"; check AUTH_ROLES_FROM$"):
            AuthApiClient().profile_from({"id": 1, "email": "a@b.c"}, access_token="opaque")

    def test_token_roles_reads_the_token_whatever_the_setting(self, settings):
        settings.AUTH_ROLES_FROM = "me"
        assert AuthApiClient().token_roles(jwt_for(["evaluator"])) == ("evaluator",)

    def test_me_reads_roles_from_the_token_it_sent(self, backend, settings):
        settings.AUTH_ROLES_FROM = "token"
        fakes.stub_me(backend)
        assert AuthApiClient().me(Tokens(access=jwt_for(["evaluator"]))).roles == ("evaluator",)
        source = fakes.Source(Tokens(access=jwt_for(["admin"])))
        assert AuthApiClient().me(source).roles == ("admin",)


def test_a_token_not_to_be_sent_leaves_the_next_in_place():
    sent = carry([(Place("bearer"), None), (Place("cookie", "r"), "R")])
    assert sent.headers == {"Cookie": "r=R"}
