from __future__ import annotations

from django.contrib.auth.models import User
from django.db import models


class Article(models.Model):
    title = models.CharField(max_length=200)

    def __str__(self) -> str:
        return self.title


class Comment(models.Model):
    article = models.ForeignKey(Article, on_delete=models.CASCADE, related_name="comments")
    body = models.TextField()

    def __str__(self) -> str:
        return self.body


class Staff(User):
    """A proxy of auth.User in a project app: it must live where auth_user does."""

    class Meta:
        proxy = True


class Counter(models.Model):
    """A model with no relations, for placement rules."""

    name = models.CharField(max_length=50)

    def __str__(self) -> str:
        return self.name


class Label(models.Model):
    name = models.CharField(max_length=50)
    articles = models.ManyToManyField(Article, through="Labelling", related_name="labels")

    def __str__(self) -> str:
        return self.name


class Labelling(models.Model):
    """An explicit many-to-many through model."""

    label = models.ForeignKey(Label, on_delete=models.CASCADE)
    article = models.ForeignKey(Article, on_delete=models.CASCADE)

    def __str__(self) -> str:
        return f"{self.label_id}:{self.article_id}"
