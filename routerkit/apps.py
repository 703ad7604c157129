from __future__ import annotations

from django.apps import AppConfig
from django.core.signals import setting_changed


class RouterkitConfig(AppConfig):
    name = "routerkit"
    verbose_name = "routerkit"
    default_auto_field = "django.db.models.AutoField"

    def ready(self) -> None:
        from routerkit import checks, conf, writes

        checks.register()
        setting_changed.connect(conf.clear_cache, dispatch_uid="routerkit.conf")
        writes.install()
