from __future__ import annotations

from django.db import models


class Invoice(models.Model):
    number = models.CharField(max_length=50)

    def __str__(self) -> str:
        return self.number
