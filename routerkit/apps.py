from __future__ import annotations

from django.apps import AppConfig


class RouterkitConfig(AppConfig):
    name = "routerkit"
    verbose_name = "routerkit"
    default_auto_field = "django.db.models.AutoField"

    def ready(self) -> None:
        from routerkit import checks, conf, writes

        checks.register()
        conf.get_config()  # parse once at start-up
        writes.install()
