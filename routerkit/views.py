"""The Prometheus scrape view.

    # urls.py
    from routerkit.views import metrics

    urlpatterns = [
        path("metrics", metrics, {"allow": ["10.0.0.0/8"], "token": env("METRICS_TOKEN")}),
    ]

Both keyword arguments are optional. `allow` lists the client addresses or
networks that may scrape (REMOTE_ADDR: behind a proxy, set it from a trusted
header first); `token` requires ``Authorization: Bearer <token>``.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
from collections.abc import Sequence

from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_GET
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from prometheus_client.multiprocess import MultiProcessCollector

from routerkit.metrics import get_metrics


@require_GET
def metrics(
    request: HttpRequest, allow: Sequence[str] = (), token: str | None = None
) -> HttpResponse:
    """Serve routerkit's metrics (and everything else on the registry) to Prometheus."""
    if allow and not _allowed(request.META.get("REMOTE_ADDR", ""), allow):
        return HttpResponse("Forbidden\n", status=403, content_type="text/plain")
    if token is not None and not _authorized(request, token):
        response = HttpResponse("Unauthorized\n", status=401, content_type="text/plain")
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    registry = get_metrics().registry
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        # Every worker writes its own files; a registry built per scrape
        # reads them all (prometheus_client's multiprocess mode).
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
    return HttpResponse(encoder(registry), content_type=content_type)


def _allowed(address: str, allow: Sequence[str]) -> bool:
    try:
        client = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(client in ipaddress.ip_network(entry, strict=False) for entry in allow)


def _authorized(request: HttpRequest, token: str) -> bool:
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    # Constant-time comparison: the time taken must not tell how much matched.
    return scheme.lower() == "bearer" and hmac.compare_digest(given.encode(), token.encode())
