import os

from django.db import migrations, router


def opening_entry(apps, schema_editor):
    # Fails on purpose when the routerkit_migrate tests ask for it.
    if os.environ.get("ROUTERKIT_TEST_LEDGER_FAIL"):
        raise RuntimeError("opening entry refused")
    Entry = apps.get_model("ledger", "Entry")
    # No using(), as many data migrations are written: the read must see this primary.
    Entry.objects.create(amount=0, read_from=router.db_for_read(Entry))


class Migration(migrations.Migration):
    # Outside a transaction, so that nothing but use_primary() keeps the read on the primary.
    atomic = False
    dependencies = [("ledger", "0001_initial")]

    operations = [migrations.RunPython(opening_entry, migrations.RunPython.noop)]
