"""Two views: a client writes its next item, and reads back the newest it can see."""

from __future__ import annotations

from django.db.models import Max
from django.http import HttpRequest, HttpResponse, JsonResponse

from offload_app.models import Item


def write(request: HttpRequest, client: int, seq: int) -> HttpResponse:
    Item.objects.create(client=client, seq=seq)
    return HttpResponse(status=201)


def read(request: HttpRequest, client: int) -> JsonResponse:
    newest = Item.objects.filter(client=client).aggregate(newest=Max("seq"))["newest"]
    return JsonResponse({"seq": newest or 0})
