"""The demo project's debug-page filter: the package's, with the reference API hidden too."""

from accounts.debug import TokenSafeExceptionReporterFilter


class DemoExceptionReporterFilter(TokenSafeExceptionReporterFilter):
    # The reference API (authapi/) holds passwords and tokens in its locals as well.
    TOKEN_PACKAGES = (*TokenSafeExceptionReporterFilter.TOKEN_PACKAGES, "authapi")
