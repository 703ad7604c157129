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


class Charge(models.Model):
    """A charge for an article, which lives on another database: a plain id, not a key.

    Deleting the article deletes its charges in a post_delete handler
    (tests/spanning.py), the README's pattern for deletes across databases.
    """

    article_id = models.BigIntegerField(db_index=True)
    amount = models.IntegerField()

    def __str__(self) -> str:
        return f"{self.amount} for {self.article_id}"
