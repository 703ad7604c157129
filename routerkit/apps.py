from __future__ import annotations

from django.apps import AppConfig


class RouterkitConfig(AppConfig):
    name = "routerkit"
    verbose_name = "routerkit"
    default_auto_field = "django.db.models.AutoField"

    def ready(self) -> None:
        from routerkit import checks, conf

        checks.register()
        # Parse once at start-up; this also installs write tracking.
        conf.get_config()
