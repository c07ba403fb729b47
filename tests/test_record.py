"""The session's record of its token pair (accounts/record.py): hashes, expiries, rounds."""

import json
import time
from dataclasses import replace
from datetime import UTC, datetime

import pytest
from django.utils.crypto import salted_hmac

from accounts.cookies import BackendCookie, parse_set_cookie
from accounts.record import TokenRecord, access_expiry, hash_matches, token_hash
from tests import fakes


def record(**changes) -> TokenRecord:
    """A record with round numbers, so expiry arithmetic is exact."""
    fields = {
        "user_id": "1",
        "binding": "b-1",
        "access_hash": "a" * 40,
        "refresh_hash": "r" * 40,
        "access_expires_at": 1000.0,
        "access_lifetime": 100.0,
        "refresh_expires_at": None,
        "validated_at": 0.0,
    }
    return TokenRecord(**{**fields, **changes})


def cookie(name: str, value: str, max_age: int | None = 1800, path: str = "/") -> BackendCookie:
    return BackendCookie(name=name, value=value, max_age=max_age, path=path)


class TestTokenHash:
    def test_is_an_hmac_under_the_secret_key_and_never_the_value(self, settings):
        settings.SECRET_KEY = "k" * 50
        digest = token_hash("refresh-1")
        expected = salted_hmac("accounts.record.token", "refresh-1", algorithm="sha256")
        assert digest == expected.hexdigest()[:40]
        assert len(digest) == 40
        assert "refresh-1" not in digest

    def test_changes_with_the_secret_key(self, settings):
        settings.SECRET_KEY = "k" * 50
        first = token_hash("refresh-1")
        settings.SECRET_KEY = "z" * 50
        assert token_hash("refresh-1") != first
        assert token_hash("refresh-1", secret="k" * 50) == first

    def test_matches_under_the_key_or_a_fallback_only(self, settings):
        settings.SECRET_KEY = "old-" * 13
        stored = token_hash("refresh-1")
        assert hash_matches("refresh-1", stored)
        settings.SECRET_KEY, settings.SECRET_KEY_FALLBACKS = "new-" * 13, ["old-" * 13]
        assert hash_matches("refresh-1", stored)
        assert not hash_matches("refresh-2", stored)
        settings.SECRET_KEY_FALLBACKS = []
        assert not hash_matches("refresh-1", stored)

    def test_matches_without_any_fallbacks_setting(self, settings):
        del settings.SECRET_KEY_FALLBACKS
        assert hash_matches("refresh-1", token_hash("refresh-1"))
        assert not hash_matches("refresh-1", token_hash("refresh-2"))

    @pytest.mark.parametrize(("value", "stored_of"), [(None, "None"), ("", ""), ("x", None)])
    def test_a_missing_value_or_hash_never_matches(self, value, stored_of):
        stored = token_hash(stored_of) if stored_of is not None else None
        assert hash_matches(value, stored) is False
        assert hash_matches("x", "") is False


class TestAccessExpiry:
    def test_the_earlier_of_cookie_and_jwt(self):
        long_jwt = fakes.access_jwt(ttl=3600)
        soon = cookie("access_token", long_jwt, max_age=60)
        assert access_expiry(soon, long_jwt) == pytest.approx(time.time() + 60, abs=2)
        short_jwt = fakes.access_jwt(ttl=30)
        late = cookie("access_token", short_jwt, max_age=3600)
        assert access_expiry(late, short_jwt) == pytest.approx(time.time() + 30, abs=2)

    def test_either_alone_or_neither(self):
        assert access_expiry(None, fakes.access_jwt(ttl=90)) == pytest.approx(
            time.time() + 90, abs=2
        )
        assert access_expiry(cookie("a", "opaque", 120), "opaque") == pytest.approx(
            time.time() + 120, abs=2
        )
        assert access_expiry(cookie("a", "opaque", None), "opaque") is None
        assert access_expiry(None, None) is None

    @pytest.mark.parametrize("exp", [True, "4102444800", None, [1]])
    def test_an_exp_that_is_not_a_number_is_ignored(self, exp):
        token = fakes.jwt.encode({"sub": "1", "exp": 0}, "k" * 32, algorithm="HS256")
        header, _, sig = token.split(".")
        payload = fakes.jwt.utils.base64url_encode(json.dumps({"exp": exp}).encode()).decode()
        assert access_expiry(None, f"{header}.{payload}.{sig}") is None

    def test_a_float_exp_counts(self):
        token = fakes.jwt.encode({"exp": 4102444800.5}, "k" * 32, algorithm="HS256")
        assert access_expiry(None, token) == 4102444800.5


class TestIssueAndRenew:
    def pair(self, access="acc-1", refresh="refresh-1", **ages):
        return [
            parse_set_cookie(fakes.express_cookie("access_token", access, ages.get("a", 1800))),
            parse_set_cookie(fakes.express_cookie("refresh_token", refresh, ages.get("r", 3600))),
        ]

    def test_issue_records_hashes_expiries_and_a_fresh_binding(self):
        issued = TokenRecord.issue(
            user_id="7", access="acc-1", refresh="refresh-1", cookies=self.pair()
        )
        now = time.time()
        assert (issued.user_id, issued.generation, issued.round) == ("7", 0, 0)
        assert issued.access_hash == token_hash("acc-1")
        assert issued.refresh_hash == token_hash("refresh-1")
        assert issued.access_expires_at == pytest.approx(now + 1800, abs=2)
        assert issued.access_lifetime == pytest.approx(1800, abs=2)
        assert issued.refresh_expires_at == pytest.approx(now + 3600, abs=2)
        assert issued.validated_at == pytest.approx(now, abs=2)
        assert len(issued.binding) == 22  # 128 random bits
        other = TokenRecord.issue(user_id="7", access="a", refresh="r", cookies=[])
        assert other.binding != issued.binding

    def test_renewed_moves_one_generation_and_resets_the_round_on_rotation(self):
        first = replace(record(), generation=3, round=2, refresh_expires_at=5.0)
        renewed = first.renewed(access="acc-2", refresh="refresh-2", cookies=self.pair("acc-2"))
        assert renewed.generation == 4
        assert renewed.round == 0
        assert renewed.binding == first.binding and renewed.user_id == "1"
        assert renewed.access_hash == token_hash("acc-2")
        assert renewed.refresh_expires_at == pytest.approx(time.time() + 3600, abs=2)

    def test_the_same_refresh_token_back_is_the_next_round(self):
        first = replace(record(), refresh_hash=token_hash("refresh-1"), refresh_expires_at=5.0)
        access_only = [cookie("access_token", "acc-2")]
        renewed = first.renewed(access="acc-2", refresh="refresh-1", cookies=access_only)
        assert renewed.round == 1
        assert renewed.refresh_expires_at == 5.0  # the token it still is
        again = renewed.renewed(access="acc-3", refresh="refresh-1", cookies=access_only)
        assert again.round == 2

    def test_a_new_refresh_token_without_its_cookie_keeps_the_old_expiry(self):
        """A successor lives at least as long as the token it replaced (the session's
        expiry follows it, accounts/delivery.py `_save_record`)."""
        first = replace(record(), refresh_expires_at=5.0)
        renewed = first.renewed(access="acc-2", refresh="refresh-2", cookies=[])
        assert renewed.refresh_expires_at == 5.0
        assert renewed.access_expires_at is None and renewed.access_lifetime is None

    def test_explicit_round_and_generation_win(self):
        renewed = record().renewed(
            access=None, refresh="refresh-2", cookies=[], round_=5, generation=9
        )
        assert (renewed.round, renewed.generation, renewed.access_hash) == (5, 9, None)

    def test_backend_cookie_paths_are_remembered_and_deletions_ignored(self):
        first = replace(record(), cookie_paths=("/old",))
        cookies = [
            cookie("access_token", "acc-2", path="/"),
            cookie("refresh_token", "refresh-2", max_age=600, path="/auth/refresh"),
            cookie("access_token", "", max_age=0, path="/gone"),
        ]
        renewed = first.renewed(access="acc-2", refresh="refresh-2", cookies=cookies)
        assert renewed.cookie_paths == ("/auth/refresh", "/gone", "/old")
        assert renewed.refresh_expires_at == pytest.approx(time.time() + 600, abs=2)
        assert renewed.access_expires_at == pytest.approx(time.time() + 1800, abs=2)


class TestRefreshDue:
    def test_no_access_token_is_due_and_expired(self):
        assert record(access_hash=None).refresh_due(now=0, leeway=0)
        assert record(access_hash=None).access_expired(now=0)

    def test_no_known_expiry_is_never_due_nor_expired(self):
        unknown = record(access_expires_at=None, access_lifetime=None)
        assert not unknown.refresh_due(now=10**12, leeway=60)
        assert not unknown.access_expired(now=10**12)

    def test_due_from_the_leeway_on(self):
        long_lived = record(access_expires_at=1000.0, access_lifetime=1800.0)
        assert long_lived.refresh_due(now=940.0, leeway=60)
        assert not long_lived.refresh_due(now=939.9, leeway=60)

    def test_leeway_is_capped_at_half_the_lifetime(self):
        short = record(access_expires_at=1000.0, access_lifetime=20.0)
        assert not short.refresh_due(now=989.9, leeway=60)
        assert short.refresh_due(now=990.0, leeway=60)

    def test_unknown_lifetime_keeps_the_whole_leeway(self):
        assert record(access_lifetime=None).refresh_due(now=940.0, leeway=60)
        assert record(access_lifetime=0.0).refresh_due(now=940.0, leeway=60)

    def test_expired_at_the_recorded_moment(self):
        assert record().access_expired(now=1000.0)
        assert not record().access_expired(now=999.9)


class TestKeepOutcome:
    def test_the_refresh_tokens_remaining_life_and_a_minute(self):
        assert record(refresh_expires_at=time.time() + 100.5).keep_outcome_for() == 160

    def test_an_expired_token_keeps_a_minute(self):
        assert record(refresh_expires_at=time.time() - 50).keep_outcome_for() == 60

    def test_unknown_expiry_keeps_the_sessions_age(self, settings):
        settings.SESSION_COOKIE_AGE = 1000
        assert record(refresh_expires_at=None).keep_outcome_for() == 1060


class TestSessionValue:
    def test_round_trips_through_json(self):
        original = record(cookie_paths=("/auth/refresh",), generation=2, round=1)
        value = json.loads(json.dumps(original.as_session_value()))
        assert value["cookie_paths"] == ["/auth/refresh"]
        assert TokenRecord.from_session_value(value) == original

    def test_cookie_paths_may_be_absent(self):
        value = record().as_session_value()
        del value["cookie_paths"]
        assert TokenRecord.from_session_value(value).cookie_paths == ()

    @pytest.mark.parametrize(
        "value",
        [
            None,
            "garbage",
            ["list"],
            {"user_id": "1"},
            {**record().as_session_value(), "unknown": 1},
            {**record().as_session_value(), "refresh_hash": ""},
            {**record().as_session_value(), "binding": ""},
        ],
        ids=["none", "str", "list", "partial", "extra-key", "no-refresh", "no-binding"],
    )
    def test_garbage_is_no_record(self, value):
        assert TokenRecord.from_session_value(value) is None


def test_expiries_are_the_issued_ones_not_later_claims():
    """A cookie's Expires (not Max-Age) counts as well, and is read as issued."""
    expires = datetime(2099, 1, 1, tzinfo=UTC)
    by_date = BackendCookie(name="access_token", value="opaque", expires=expires)
    issued = TokenRecord.issue(user_id="1", access="opaque", refresh="r", cookies=[by_date])
    assert issued.access_expires_at == expires.timestamp()
