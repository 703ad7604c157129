"""Views that write then read in one request, for the middleware tests."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

from django.contrib.admin.models import ADDITION, LogEntry
from django.contrib.contenttypes.models import ContentType
from django.http import HttpRequest, JsonResponse, StreamingHttpResponse
from django.urls import include, path

import routerkit
from routerkit import use_primary
from tests.billing.models import Invoice
from tests.testapp.models import Article


def _describe(article: Article | None) -> JsonResponse:
    if article is None:
        return JsonResponse({"found": False}, status=404)
    return JsonResponse({"id": article.pk, "title": article.title, "db": article._state.db})


def create_then_read(request: HttpRequest) -> JsonResponse:
    created = Article.objects.create(title=request.POST["title"])
    return _describe(Article.objects.filter(pk=created.pk).first())


def create_invoice(request: HttpRequest) -> JsonResponse:
    invoice = Invoice.objects.create(number=request.POST["number"])
    return JsonResponse({"id": invoice.pk, "db": invoice._state.db}, status=201)


def create_on_a_thread(request: HttpRequest) -> JsonResponse:
    """Write on a pool thread (wrapped in scoped()), then read it back here."""

    def create() -> int:
        return int(Article.objects.create(title=request.POST["title"]).pk)

    with ThreadPoolExecutor(max_workers=1) as pool:
        pk = pool.submit(routerkit.scoped(create)).result()
    return _describe(Article.objects.filter(pk=pk).first())


def read(request: HttpRequest, pk: int) -> JsonResponse:
    return _describe(Article.objects.filter(pk=pk).first())


@use_primary()
def read_on_primary(request: HttpRequest, pk: int) -> JsonResponse:
    return _describe(Article.objects.filter(pk=pk).first())


def create_then_stream(request: HttpRequest) -> StreamingHttpResponse:
    created = Article.objects.create(title="streamed")

    def body() -> Iterator[str]:
        # Read while the server sends the body, after the view has returned.
        found = Article.objects.filter(pk=created.pk).first()
        yield f"{found is not None} {found._state.db if found else None}"

    return StreamingHttpResponse(body())


def read_while_streaming(request: HttpRequest, pk: int) -> StreamingHttpResponse:
    first = Article.objects.filter(pk=pk).first()

    def body() -> Iterator[str]:
        yield f"{first._state.db if first else None}\n"
        # Read again while the body is sent, maybe long after the request began.
        again = Article.objects.filter(pk=pk).first()
        yield f"{again._state.db if again else None}\n"

    return StreamingHttpResponse(body())


async def acreate_then_read(request: HttpRequest) -> JsonResponse:
    created = await Article.objects.acreate(title=request.POST["title"])
    return _describe(await Article.objects.filter(pk=created.pk).afirst())


async def aread(request: HttpRequest, pk: int) -> JsonResponse:
    return _describe(await Article.objects.filter(pk=pk).afirst())


def log(request: HttpRequest) -> JsonResponse:
    # request.user is a SimpleLazyObject: relating an object to it is the
    # everyday case of a logged-in view.
    entry = LogEntry.objects.create(
        user=request.user,
        content_type=ContentType.objects.get_for_model(Article),
        object_id="1",
        object_repr="an article",
        action_flag=ADDITION,
    )
    return JsonResponse({"id": entry.pk}, status=201)


urlpatterns = [
    path("log/", log),
    path("spanning/", include("tests.spanning")),
    path("articles/", create_then_read),
    path("articles/<int:pk>/", read),
    path("invoices/", create_invoice),
    path("threaded/articles/", create_on_a_thread),
    path("stream/", create_then_stream),
    path("stream/articles/<int:pk>/", read_while_streaming),
    path("primary/articles/<int:pk>/", read_on_primary),
    path("async/articles/", acreate_then_read),
    path("async/articles/<int:pk>/", aread),
]
