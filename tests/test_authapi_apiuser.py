"""`manage.py apiuser`: an admin changes an account at the reference auth API.

Each change is checked where it matters, at the API's endpoints: a disabled
account's tokens stop refreshing and reading /users/me, new roles show in
/users/me, a revoke ends every sign-in of that account and no other.
"""

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from authapi.management.commands.apiuser import parse_roles
from authapi.models import ApiUser, TokenFamily
from tests.test_authapi import (
    ADMIN,
    EVALUATOR,
    assert_json_error,
    login,
    me_with,
    refresh_with,
    tokens_of,
)


def apiuser(*args: str) -> str:
    out = StringIO()
    call_command("apiuser", *args, stdout=out)
    return out.getvalue()


class TestDisableEnable:
    def test_disable_refuses_the_accounts_tokens_and_sign_in(self, api_client):
        access, refresh = tokens_of(login(api_client))
        other_access, _ = tokens_of(login(api_client, EVALUATOR))

        out = apiuser("disable", ADMIN.email)

        assert out.count("\n") == 1
        assert out.startswith(f"Disabled {ADMIN.email}")
        assert ApiUser.objects.get(email=ADMIN.email).is_active is False
        assert_json_error(me_with(api_client, access), 401)
        assert_json_error(refresh_with(api_client, refresh), 401)
        assert_json_error(login(api_client), 401)
        # Nobody else is affected.
        assert me_with(api_client, other_access).status_code == 200

    def test_enable_lets_the_account_back_in(self, api_client):
        access, refresh = tokens_of(login(api_client))
        apiuser("disable", ADMIN.email)
        assert_json_error(refresh_with(api_client, refresh), 401)

        out = apiuser("enable", ADMIN.email)

        assert out == f"Enabled {ADMIN.email}\n"
        assert ApiUser.objects.get(email=ADMIN.email).is_active is True
        # Disabling revoked nothing: the sign-in's tokens work again.
        assert me_with(api_client, access).status_code == 200
        assert refresh_with(api_client, refresh).status_code == 200
        assert login(api_client).status_code == 201

    def test_repeating_says_so(self, api_client):
        assert "already" in apiuser("enable", ADMIN.email)
        apiuser("disable", ADMIN.email)
        assert "already" in apiuser("disable", ADMIN.email)


class TestRoles:
    def test_replaces_the_roles_that_users_me_reports(self, api_client):
        access, _ = tokens_of(login(api_client))

        out = apiuser("roles", ADMIN.email, "evaluator,auditor")

        assert out == f"Roles of {ADMIN.email}: evaluator, auditor\n"
        assert me_with(api_client, access).json()["roles"] == ["evaluator", "auditor"]

    def test_an_empty_string_clears_them(self, api_client):
        access, _ = tokens_of(login(api_client))

        out = apiuser("roles", ADMIN.email, "")

        assert out == f"Roles of {ADMIN.email}: (none)\n"
        assert ApiUser.objects.get(email=ADMIN.email).roles == []
        assert me_with(api_client, access).json()["roles"] == []

    @pytest.mark.parametrize(
        ("value", "roles"),
        [
            ("admin", ["admin"]),
            (" admin , evaluator ", ["admin", "evaluator"]),
            ("admin,,admin,", ["admin"]),
            (",", []),
            ("", []),
        ],
    )
    def test_parsing(self, value, roles):
        assert parse_roles(value) == roles


class TestRevoke:
    def test_ends_every_sign_in_of_that_account_only(self, api_client):
        first = tokens_of(login(api_client))
        second = tokens_of(login(api_client))
        other_access, other_refresh = tokens_of(login(api_client, EVALUATOR))

        out = apiuser("revoke", ADMIN.email)

        assert out == f"Revoked 2 live token families of {ADMIN.email}\n"
        for access, refresh in (first, second):
            assert_json_error(me_with(api_client, access), 401)
            assert_json_error(refresh_with(api_client, refresh), 401)
        assert set(
            TokenFamily.objects.filter(user__email=ADMIN.email).values_list(
                "revoked_reason", flat=True
            )
        ) == {"admin"}
        assert me_with(api_client, other_access).status_code == 200
        assert refresh_with(api_client, other_refresh).status_code == 200
        # The account itself still signs in.
        assert login(api_client).status_code == 201

    def test_counts_only_live_families(self, api_client):
        tokens_of(login(api_client))
        assert apiuser("revoke", ADMIN.email).startswith("Revoked 1 live token family ")
        assert apiuser("revoke", ADMIN.email).startswith("Revoked 0 live token families ")


class TestErrors:
    @pytest.mark.parametrize("action", ["disable", "enable", "revoke"])
    def test_unknown_email(self, api_client, action):
        with pytest.raises(CommandError, match='No account with email "ghost@example.com"'):
            apiuser(action, "ghost@example.com")

    def test_unknown_email_for_roles_changes_nothing(self, api_client):
        before = list(ApiUser.objects.values_list("email", "roles", "is_active"))
        with pytest.raises(CommandError, match="ghost@example.com"):
            apiuser("roles", "ghost@example.com", "admin")
        assert list(ApiUser.objects.values_list("email", "roles", "is_active")) == before
        assert not ApiUser.objects.filter(email__iexact="ghost@example.com").exists()

    def test_email_is_case_insensitive(self, api_client):
        assert apiuser("disable", "  Admin@Example.COM ").startswith(f"Disabled {ADMIN.email}")
        assert ApiUser.objects.get(email=ADMIN.email).is_active is False

    @pytest.mark.parametrize(
        "args", [(), ("disable",), ("roles", ADMIN.email), ("promote", ADMIN.email)]
    )
    def test_bad_usage(self, api_client, args):
        with pytest.raises(CommandError):
            apiuser(*args)
