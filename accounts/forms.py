from django import forms
from django.contrib.auth import authenticate
from django.core.exceptions import ValidationError
from django.utils.translation import gettext_lazy as _

from .exceptions import AccessRefused

MAX_PASSWORD_LENGTH = 1024


class LoginForm(forms.Form):
    """Email and password, checked against the auth API by `authenticate()`.

    Shaped like Django's AuthenticationForm (`request` argument, `get_user()`)
    so `django.contrib.auth.views.LoginView` can drive it. `Throttled` and
    backend failures are not form errors: they propagate for the view to turn
    into a 429 or 503 page.
    """

    email = forms.EmailField(
        label=_("Email"),
        max_length=254,
        widget=forms.EmailInput(attrs={"autocomplete": "email", "autofocus": True}),
    )
    password = forms.CharField(
        label=_("Password"),
        strip=False,
        max_length=MAX_PASSWORD_LENGTH,
        widget=forms.PasswordInput(attrs={"autocomplete": "current-password"}),
    )

    error_messages = {
        "invalid_login": _("Invalid email or password"),
        # Shown only after the right password (the backend has already said
        # so); docs/app.md ("Signing in") says why it is not hidden.
        "access_refused": _(
            "This account does not have access. Sign in with another account, or ask the "
            "site's administrator to give this one access."
        ),
    }

    def __init__(self, request=None, *args, **kwargs):
        self.request = request
        self.user_cache = None
        super().__init__(*args, **kwargs)

    def clean(self):
        email = self.cleaned_data.get("email")
        password = self.cleaned_data.get("password")
        if email and password:
            try:
                self.user_cache = authenticate(self.request, email=email, password=password)
            except AccessRefused as exc:
                raise ValidationError(
                    self.error_messages["access_refused"], code="access_refused"
                ) from exc
            if self.user_cache is None:
                raise ValidationError(self.error_messages["invalid_login"], code="invalid_login")
        return self.cleaned_data

    def get_user(self):
        return self.user_cache
