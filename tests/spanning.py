"""Deletes that span databases: the README's pattern, and views that exercise it.

An Article lives on `primary` (two replicas), its Charges on `billing` (one
replica). Django's deletion collector works on one database, so the charges
go in a post_delete handler. Its read runs under use_primary(): the rows to
delete may have been written a moment ago by anyone, and a replica that has
not replayed them would leave them behind.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.http import HttpRequest, JsonResponse
from django.shortcuts import get_object_or_404
from django.urls import path

from routerkit import use_primary
from tests.billing.models import Charge
from tests.testapp.models import Article

# Where the handler's reads went, for the tests (database alias per read).
reads: list[str] = []


def delete_charges(sender: type[Article], instance: Article, **kwargs: Any) -> None:
    with use_primary():
        charges = list(Charge.objects.filter(article_id=instance.pk))
    reads.extend(charge._state.db or "" for charge in charges)
    for charge in charges:
        charge.delete()  # one by one, so that Charge's own signals run


def create(request: HttpRequest) -> JsonResponse:
    article = Article.objects.create(title=request.POST["title"])
    Charge.objects.create(article_id=article.pk, amount=int(request.POST["amount"]))
    return JsonResponse({"id": article.pk}, status=201)


def charge(request: HttpRequest, pk: int) -> JsonResponse:
    Charge.objects.create(article_id=pk, amount=int(request.POST["amount"]))
    return JsonResponse({"id": pk}, status=201)


def delete(request: HttpRequest, pk: int) -> JsonResponse:
    # Django's delete runs in a transaction on the article's database; the
    # handler's deletes on billing commit one by one (no transaction there,
    # as in most views: within atomic(using="billing") reads would go to
    # billing's primary anyway).
    with transaction.atomic(using="primary"):
        get_object_or_404(Article, pk=pk).delete()
    return JsonResponse({"deleted": pk})


def show(request: HttpRequest, pk: int) -> JsonResponse:
    article = Article.objects.filter(pk=pk).first()
    charges = list(Charge.objects.filter(article_id=pk))
    return JsonResponse(
        {
            "article": article is not None,
            "charges": sorted(c.amount for c in charges),
            "read_from": sorted(
                {c._state.db for c in charges} | {Article.objects.filter(pk=pk).db}
            ),
        }
    )


urlpatterns = [
    path("", create),
    path("<int:pk>/", show),
    path("<int:pk>/charges/", charge),
    path("<int:pk>/delete/", delete),
]
