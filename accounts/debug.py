"""Keep token values out of Django's error reports and debug page."""

from django.views.debug import SafeExceptionReporterFilter

from .conf import conf


class TokenSafeExceptionReporterFilter(SafeExceptionReporterFilter):
    """Django's filter, also hiding the token cookies under whatever names they are configured.

    Django already hides cookies whose names look secret (`access_token`
    matches TOKEN); a backend calling them `at` and `rt` would not. Functions
    holding raw tokens are marked with `sensitive_variables` as well, and
    unlike Django's default this filter works under DEBUG too: the debug page
    of a developer's laptop shows no token either.
    """

    def is_active(self, request):
        return True

    def get_safe_cookies(self, request):
        cookies = super().get_safe_cookies(request)
        for name in conf.token_cookies:
            if name in cookies:
                cookies[name] = self.cleansed_substitute
        return cookies
