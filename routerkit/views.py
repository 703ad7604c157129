"""The Prometheus scrape view.

    # urls.py
    from routerkit.views import metrics

    urlpatterns = [
        path("metrics", metrics, {"allow": ["10.0.0.0/8"], "token": env("METRICS_TOKEN")}),
    ]

Both keyword arguments are optional. `allow` lists the client addresses or
networks that may scrape (REMOTE_ADDR: behind a proxy, set it from a trusted
header first; an IPv4 client that a dual-stack server reports as ``::ffff:a.b.c.d``
matches IPv4 entries); `token` requires ``Authorization: Bearer <token>`` and
must not be empty. A malformed `allow` entry or an empty `token` raises
ImproperlyConfigured on every request, before any client is let in.
"""

from __future__ import annotations

import functools
import hmac
import ipaddress
import os
from collections.abc import Sequence
from typing import TypeAlias

from django.core.exceptions import ImproperlyConfigured
from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_GET
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from prometheus_client.multiprocess import MultiProcessCollector

from routerkit.metrics import get_metrics

Network: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network


@require_GET
def metrics(
    request: HttpRequest, allow: Sequence[str] = (), token: str | None = None
) -> HttpResponse:
    """Serve routerkit's metrics (and everything else on the registry) to Prometheus."""
    # Configuration mistakes are raised before the client is looked at, so that
    # every scrape shows them, not only the ones that get past `allow`.
    networks = _networks(_entries(allow))
    if token == "":
        # "Bearer " with nothing after it would match: refuse to run open.
        raise ImproperlyConfigured(
            "routerkit.views.metrics: token is empty; give a secret, or None for no token."
        )
    if allow and not _allowed(request.META.get("REMOTE_ADDR", ""), networks):
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


def _entries(allow: Sequence[str]) -> tuple[str, ...]:
    if isinstance(allow, str):
        # A bare string would be read one character at a time.
        raise ImproperlyConfigured(
            f"routerkit.views.metrics: allow must be a list of addresses, not {allow!r}."
        )
    return tuple(allow)


@functools.lru_cache(maxsize=64)
def _networks(allow: tuple[str, ...]) -> tuple[Network, ...]:
    """Parse the allow list once (the view's kwargs are the same on every request)."""
    networks = []
    for entry in allow:
        try:
            networks.append(ipaddress.ip_network(entry.strip(), strict=False))
        except ValueError:
            raise ImproperlyConfigured(
                f"routerkit.views.metrics: allow entry {entry!r} is not an IP address or network."
            ) from None
    return tuple(networks)


def _allowed(address: str, networks: tuple[Network, ...]) -> bool:
    try:
        client = ipaddress.ip_address(address)
    except ValueError:
        return False
    candidates: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = [client]
    if isinstance(client, ipaddress.IPv6Address) and client.ipv4_mapped is not None:
        # A dual-stack socket reports an IPv4 client as ::ffff:a.b.c.d.
        candidates.append(client.ipv4_mapped)
    return any(c in network for c in candidates for network in networks)


def _authorized(request: HttpRequest, token: str) -> bool:
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    # Constant-time comparison: the time taken must not tell how much matched.
    return scheme.lower() == "bearer" and hmac.compare_digest(given.encode(), token.encode())
