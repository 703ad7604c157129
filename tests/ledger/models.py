"""An app only the routerkit_migrate tests install: a data migration that can be made to fail."""

from __future__ import annotations

from django.db import models


class Entry(models.Model):
    amount = models.IntegerField()
    # Where the data migration's unrouted read went (it must be the primary).
    read_from = models.CharField(max_length=50, blank=True)

    def __str__(self) -> str:
        return str(self.amount)
