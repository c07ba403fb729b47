"""The browsers signed in before this app existed: their rows, from accounts.Session's columns.

Until then accounts.Session kept each session's device, address, sign-in
moment, backend sid, last-seen time and token storage in columns of its own
(accounts/migrations/0005, 0006); accounts/migrations/0007 drops them after
this has copied every unexpired signed-in session's into a UserSession.
"""

from django.db import migrations
from django.utils import timezone


def copy_rows(apps, schema_editor):
    Session = apps.get_model("accounts", "Session")
    UserSession = apps.get_model("usersessions", "UserSession")
    using = schema_editor.connection.alias
    live = Session.objects.using(using).filter(expire_date__gt=timezone.now(), user__isnull=False)
    batch = []
    for row in live.iterator(chunk_size=1000):
        batch.append(
            UserSession(
                session_key=row.session_key,
                user_id=row.user_id,
                signed_in_at=row.signed_in_at,
                device=row.device,
                address=row.address,
                backend_sid=row.backend_sid,
                last_seen=row.last_seen,
                expires_at=row.expire_date,
                token_storage=row.token_storage,
            )
        )
        if len(batch) == 1000:
            UserSession.objects.using(using).bulk_create(batch, ignore_conflicts=True)
            batch = []
    UserSession.objects.using(using).bulk_create(batch, ignore_conflicts=True)


class Migration(migrations.Migration):
    dependencies = [
        ("usersessions", "0001_initial"),
        ("accounts", "0006_session_token_storage"),
    ]
    run_before = [
        ("accounts", "0007_session_columns_move_to_usersessions"),
    ]

    operations = [
        migrations.RunPython(copy_rows, migrations.RunPython.noop, elidable=True),
    ]
