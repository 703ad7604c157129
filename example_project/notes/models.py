from __future__ import annotations

from django.db import models


class Note(models.Model):
    text = models.TextField()

    def __str__(self) -> str:
        return self.text[:50]
