from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0005_session_devices"),
    ]

    operations = [
        migrations.AddField(
            model_name="session",
            name="token_storage",
            field=models.CharField(blank=True, max_length=10),
        ),
    ]
