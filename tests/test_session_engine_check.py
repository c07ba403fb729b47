"""`accounts.E015`/`E016`: a SESSION_ENGINE whose sessions sign-out cannot end, or the
sessions features cannot find, fails `manage.py check` naming the setting."""

import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError

from accounts.checks import check_session_engine


def test_the_projects_own_store_passes(settings):
    settings.SESSION_ENGINE = "accounts.sessions"
    assert check_session_engine() == []


def test_signed_cookies_are_refused_by_name(settings):
    settings.SESSION_ENGINE = "django.contrib.sessions.backends.signed_cookies"
    (error,) = check_session_engine()
    assert error.id == "accounts.E015"
    assert "SESSION_ENGINE=django.contrib.sessions.backends.signed_cookies" in error.msg
    assert 'SESSION_ENGINE = "accounts.sessions"' in error.hint


@pytest.mark.parametrize(
    "engine",
    [
        "django.contrib.sessions.backends.db",  # rows in django_session: invisible here
        "django.contrib.sessions.backends.cache",  # no model at all
        "django.contrib.sessions.backends.file",
    ],
)
def test_a_store_outside_accounts_session_is_refused(settings, engine):
    settings.SESSION_ENGINE = engine
    (error,) = check_session_engine()
    assert error.id == "accounts.E016"
    assert f"SESSION_ENGINE={engine}" in error.msg


def test_manage_py_check_fails_on_it(settings):
    settings.SESSION_ENGINE = "django.contrib.sessions.backends.signed_cookies"
    with pytest.raises(SystemCheckError, match="accounts.E015"):
        call_command("check")
