"""The notes API. Every read response says which database served it."""

from __future__ import annotations

import os

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from example_project.notes.models import Note

MAX_TEXT = 10_000
SERVED_BY = "X-Routerkit-Database"
# Access control of /metrics, from the environment: METRICS_ALLOW (addresses or
# networks, comma-separated) and METRICS_TOKEN (a bearer token). Open when unset.
METRICS_ACCESS = {
    key: value
    for key, value in {
        "allow": [a.strip() for a in os.environ.get("METRICS_ALLOW", "").split(",") if a.strip()],
        "token": os.environ.get("METRICS_TOKEN") or None,
    }.items()
    if value
}


@require_GET
def index(request: HttpRequest) -> JsonResponse:
    replicas = settings.ROUTERKIT["REPLICAS"]
    return JsonResponse(
        {
            "primary": settings.ROUTERKIT["DEFAULT"],
            "replicas": replicas.get(settings.ROUTERKIT["DEFAULT"], []),
            "endpoints": ["POST /notes/ text=...", "GET /notes/<id>/", "GET /metrics"],
        }
    )


@csrf_exempt  # a JSON API for curl and load tools, not a browser form
@require_POST
def create_note(request: HttpRequest) -> JsonResponse:
    text = request.POST.get("text", "")
    if not text.strip() or len(text) > MAX_TEXT:
        return JsonResponse(
            {"error": f"'text' is required, at most {MAX_TEXT} characters."}, status=400
        )
    note = Note.objects.create(text=text)
    return JsonResponse({"id": note.pk}, status=201)


@require_GET
def note_detail(request: HttpRequest, pk: int) -> HttpResponse:
    notes = Note.objects.filter(pk=pk)
    database = notes.db  # ask the routers once, then report that alias
    note = notes.using(database).first()
    if note is None:
        response = JsonResponse({"error": "not found"}, status=404)
    else:
        response = JsonResponse({"id": note.pk, "text": note.text})
    response[SERVED_BY] = database
    return response
