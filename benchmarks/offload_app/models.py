from __future__ import annotations

from django.db import models


class Item(models.Model):
    """One write of one benchmark client: its `seq`-th."""

    client = models.IntegerField()
    seq = models.IntegerField()

    class Meta:
        app_label = "offload_app"
        indexes = [models.Index(fields=["client", "seq"])]

    def __str__(self) -> str:
        return f"{self.client}:{self.seq}"
