# The sessions page's columns move to accounts.usersessions' own table
# (accounts/usersessions/migrations/0002 copies them first, when installed).

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0006_session_token_storage"),
    ]

    operations = [
        migrations.RemoveField(model_name="session", name=name)
        for name in ("signed_in_at", "device", "address", "backend_sid", "last_seen", "token_storage")
    ]
