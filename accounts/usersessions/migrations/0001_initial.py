import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True

    dependencies = [
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name="UserSession",
            fields=[
                ("session_key", models.CharField(max_length=40, primary_key=True, serialize=False)),
                ("signed_in_at", models.DateTimeField(blank=True, null=True)),
                ("device", models.CharField(blank=True, max_length=200)),
                ("address", models.CharField(blank=True, max_length=64)),
                ("backend_sid", models.CharField(blank=True, db_index=True, max_length=128)),
                ("last_seen", models.DateTimeField(blank=True, null=True)),
                ("expires_at", models.DateTimeField(db_index=True)),
                ("token_storage", models.CharField(blank=True, max_length=10)),
                (
                    "user",
                    models.ForeignKey(
                        db_constraint=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="signed_in_sessions",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
            ],
            options={
                "indexes": [
                    models.Index(fields=["user", "expires_at"], name="usersession_user_id_1f0806_idx")
                ],
            },
        ),
    ]
