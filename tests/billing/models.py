from __future__ import annotations

from django.db import models


class Tag(models.Model):
    name = models.CharField(max_length=50)

    def __str__(self) -> str:
        return self.name


class Invoice(models.Model):
    number = models.CharField(max_length=50)
    tags = models.ManyToManyField(Tag, blank=True)

    def __str__(self) -> str:
        return self.number
