"""accounts.sessions: Django's database store, read with one lean statement."""

from datetime import timedelta

import pytest
from django.contrib.sessions.models import Session
from django.utils import timezone

from accounts.sessions import SessionStore

pytestmark = pytest.mark.django_db


def saved(data: dict) -> str:
    store = SessionStore()
    store.update(data)
    store.save()
    return store.session_key


def test_a_saved_session_reads_back():
    key = saved({"who": "Ünïcode €", "n": 3})
    assert SessionStore(session_key=key).load() == {"who": "Ünïcode €", "n": 3}


def test_an_expired_session_reads_as_empty_and_gets_no_key():
    key = saved({"who": "someone"})
    Session.objects.filter(pk=key).update(expire_date=timezone.now() - timedelta(seconds=1))
    store = SessionStore(session_key=key)
    assert store.load() == {}
    assert store.session_key is None


@pytest.mark.parametrize("key", ["nosuchsessionkeyatall000000000000", "x' OR '1'='1"])
def test_an_unknown_or_hostile_key_reads_as_empty(key):
    saved({"who": "someone"})
    assert SessionStore(session_key=key).load() == {}


def test_tampered_data_reads_as_empty():
    key = saved({"who": "someone"})
    Session.objects.filter(pk=key).update(session_data="tampered:garbage")
    assert SessionStore(session_key=key).load() == {}


def test_it_is_the_configured_engine(settings):
    assert settings.SESSION_ENGINE == "accounts.sessions"
