"""`accounts.E015`: a SESSION_ENGINE whose sessions sign-out cannot end fails
`manage.py check` naming the setting."""

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
        "django.contrib.sessions.backends.db",
        "django.contrib.sessions.backends.cached_db",
        "django.contrib.sessions.backends.cache",
        "django.contrib.sessions.backends.file",
        "accounts.sessions_raw",
    ],
)
def test_every_store_on_the_server_passes(settings, engine):
    """The sessions features index sessions in a table of their own (accounts.usersessions)
    and end one through the store itself, so any store that keeps sessions here will do."""
    settings.SESSION_ENGINE = engine
    assert check_session_engine() == []


def test_manage_py_check_fails_on_it(settings):
    settings.SESSION_ENGINE = "django.contrib.sessions.backends.signed_cookies"
    with pytest.raises(SystemCheckError, match="accounts.E015"):
        call_command("check")
