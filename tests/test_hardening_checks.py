"""System checks of issue 21's settings: trusted proxies, and secrets long enough for production."""

import pytest

from accounts.checks import MIN_SECRET_LENGTH, check_secret_lengths, check_trusted_proxies


class TestTrustedProxies:
    def test_a_proxy_count_without_proxies_is_a_warning(self, settings):
        settings.AUTH_TRUSTED_PROXY_COUNT = 1
        settings.AUTH_TRUSTED_PROXIES = []
        warnings = check_trusted_proxies()
        assert [w.id for w in warnings] == ["accounts.W002"]
        assert "AUTH_TRUSTED_PROXIES is empty" in warnings[0].msg
        assert "10.0.0.0/8" in warnings[0].hint

    @pytest.mark.parametrize(
        ("count", "proxies"), [(0, []), (0, ["10.0.0.1"]), (1, ["10.0.0.1"]), (2, ["10.0.0.0/8"])]
    )
    def test_consistent_settings_pass(self, settings, count, proxies):
        settings.AUTH_TRUSTED_PROXY_COUNT = count
        settings.AUTH_TRUSTED_PROXIES = proxies
        assert check_trusted_proxies() == []

    @pytest.mark.parametrize("entry", ["10.0.0.300", "proxy.example.com", "10.0.0.0/33"])
    def test_a_malformed_entry_is_an_error_naming_it(self, settings, entry):
        settings.AUTH_TRUSTED_PROXIES = ["10.0.0.1", entry]
        errors = check_trusted_proxies()
        assert [e.id for e in errors] == ["accounts.E014"]
        assert errors[0].msg.startswith(f"AUTH_TRUSTED_PROXIES: {entry!r} is not an IP address")

    def test_the_default_trusts_nobody(self):
        from accounts.conf import conf

        assert conf.trusted_proxies == ()


class TestSecretLengths:
    @pytest.mark.parametrize("name", ["AUTH_BACKCHANNEL_SECRET", "AUTH_METRICS_TOKEN"])
    @pytest.mark.parametrize("length", [1, MIN_SECRET_LENGTH - 1])
    def test_a_short_secret_is_a_deploy_warning(self, settings, name, length):
        setattr(settings, name, "x" * length)
        warnings = check_secret_lengths()
        assert [w.id for w in warnings] == ["accounts.W003"]
        assert warnings[0].msg == f"{name} has {length} characters; at least 32 are needed."
        assert "secrets.token_urlsafe(32)" in warnings[0].hint

    @pytest.mark.parametrize("value", [None, "", "x" * MIN_SECRET_LENGTH])
    def test_unset_or_long_enough_passes(self, settings, value):
        settings.AUTH_BACKCHANNEL_SECRET = value
        settings.AUTH_METRICS_TOKEN = value
        assert check_secret_lengths() == []

    def test_it_runs_only_with_deploy(self, settings):
        from django.core import checks

        settings.AUTH_METRICS_TOKEN = "x"
        assert "accounts.W003" not in [m.id for m in checks.run_checks()]
        assert "accounts.W003" in [m.id for m in checks.run_checks(include_deployment_checks=True)]
