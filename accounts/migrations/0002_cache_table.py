"""Create the database cache's table during `migrate`.

The default cache (and the shared cache's fallback, accounts/cache.py) is
Django's DatabaseCache; without this, a deploy that runs only `migrate`
fails at the first sign-in with "no such table: django_cache".
"""

from django.core.management import call_command
from django.db import migrations


def create_cache_tables(apps, schema_editor):
    call_command("createcachetable", database=schema_editor.connection.alias, verbosity=0)


class Migration(migrations.Migration):
    dependencies = [("accounts", "0001_initial")]

    operations = [
        migrations.RunPython(create_cache_tables, migrations.RunPython.noop, elidable=False),
    ]
