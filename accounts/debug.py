"""Keep token values out of Django's error reports and debug page."""

from collections.abc import Mapping

from django.views.debug import SafeExceptionReporterFilter

from .conf import conf


class TokenSafeExceptionReporterFilter(SafeExceptionReporterFilter):
    """Django's filter, also hiding the token cookies under whatever names they are configured.

    Django already hides cookies whose names look secret (`access_token`
    matches TOKEN); a backend calling them `at` and `rt` would not. Every
    frame of a module that handles raw tokens shows none of its variables
    (TOKEN_PACKAGES: a rule by package rather than a `sensitive_variables`
    decorator per function, so no function can be forgotten, and mutation
    testing reaches every one of them), and unlike Django's default this filter
    works under DEBUG too: the debug page of a developer's laptop shows no
    token either.
    """

    # The packages whose functions hold tokens, passwords or sealed outcomes in
    # their locals: the token core. A project adds its own in a subclass (the
    # demo adds the reference API: config/debug.py).
    TOKEN_PACKAGES = ("accounts",)

    def is_active(self, request):
        return True

    # Keys that carry tokens in a WSGI environ (a frame's `request.META`) or
    # in outgoing headers (a frame's prepared backend request).
    TOKEN_KEYS = frozenset({"http_cookie", "http_authorization", "cookie", "authorization"})

    def cleanse_special_types(self, request, value):
        """Frame variables too: an environ or a header map shows no Cookie or Authorization."""
        value = super().cleanse_special_types(request, value)
        if isinstance(value, Mapping) and not isinstance(value, str):
            try:
                hidden = [k for k in value if isinstance(k, str) and k.lower() in self.TOKEN_KEYS]
            except Exception:  # noqa: BLE001 - a debug page must not fail on an odd mapping
                return value
            if hidden:
                value = {**value, **dict.fromkeys(hidden, self.cleansed_substitute)}
        return value

    def get_traceback_frame_variables(self, request, tb_frame):
        module = tb_frame.f_globals.get("__name__") or ""
        if module.partition(".")[0] in self.TOKEN_PACKAGES:
            return {name: self.cleansed_substitute for name in tb_frame.f_locals}.items()
        return super().get_traceback_frame_variables(request, tb_frame)

    def get_safe_cookies(self, request):
        cookies = super().get_safe_cookies(request)
        for name in conf.token_cookies:
            if name in cookies:
                cookies[name] = self.cleansed_substitute
        return cookies
