"""Sessions move to accounts.Session, which also records whose they are.

Unexpired rows of Django's own table come along, so nobody signed in is
signed out by the deploy; their user column fills in at their next save (until
then the user is read by a second query, as before).
"""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models
from django.utils import timezone


def copy_sessions(apps, schema_editor):
    Old = apps.get_model("sessions", "Session")
    New = apps.get_model("accounts", "Session")
    db = schema_editor.connection.alias
    rows = Old.objects.using(db).filter(expire_date__gt=timezone.now()).iterator(chunk_size=2000)
    batch = []
    for row in rows:
        batch.append(
            New(
                session_key=row.session_key,
                session_data=row.session_data,
                expire_date=row.expire_date,
            )
        )
        if len(batch) == 2000:
            New.objects.using(db).bulk_create(batch, ignore_conflicts=True)
            batch = []
    New.objects.using(db).bulk_create(batch, ignore_conflicts=True)


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0003_throttle_and_revocations"),
        ("sessions", "0001_initial"),
    ]

    operations = [
        migrations.CreateModel(
            name="Session",
            fields=[
                (
                    "session_key",
                    models.CharField(
                        max_length=40, primary_key=True, serialize=False, verbose_name="session key"
                    ),
                ),
                ("session_data", models.TextField(verbose_name="session data")),
                ("expire_date", models.DateTimeField(db_index=True, verbose_name="expire date")),
                (
                    "user",
                    models.ForeignKey(
                        blank=True,
                        db_constraint=False,
                        null=True,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="sessions",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
            ],
            options={
                "verbose_name": "session",
                "verbose_name_plural": "sessions",
                "abstract": False,
            },
        ),
        migrations.RunPython(copy_sessions, migrations.RunPython.noop),
    ]
