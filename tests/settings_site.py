"""Settings of a site of its own (tests/sites.py): tests.settings on other databases.

The operations tests run manage.py in a subprocess against fresh, empty
databases (names prefixed with ROUTERKIT_TEST_DB_PREFIX) on the same
PostgreSQL servers, with an extra app, `ledger`, whose data migration can be
made to fail. ROUTERKIT_TEST_BILLING_ON moves the billing app to another
primary, as a restore into a changed topology needs.
"""

from __future__ import annotations

import os

from tests.settings import *  # noqa: F403
from tests.settings import DATABASES, INSTALLED_APPS, ROUTERKIT

_prefix = os.environ["ROUTERKIT_TEST_DB_PREFIX"]
DATABASES = {
    alias: {**settings_dict, "NAME": f"{_prefix}_{settings_dict['NAME']}"}
    if "NAME" in settings_dict
    else settings_dict
    for alias, settings_dict in DATABASES.items()
}
INSTALLED_APPS = [*INSTALLED_APPS, "tests.ledger"]

_billing = os.environ.get("ROUTERKIT_TEST_BILLING_ON")
if _billing:
    ROUTERKIT = {**ROUTERKIT, "APPS": {"billing": _billing}}
