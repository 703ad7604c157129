"""Access control of the Prometheus scrape view, called directly (no database)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import prometheus_client
import pytest
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpResponse
from django.test import RequestFactory

from routerkit import metrics
from routerkit.views import metrics as metrics_view

TOKEN = "s3cret"


@pytest.fixture(autouse=True)
def _fresh_registry(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Serve a fresh registry, in single-process mode."""
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    metrics.install(prometheus_client.CollectorRegistry())
    yield
    # Leave no metric of these tests behind for the next module.
    metrics.install(prometheus_client.CollectorRegistry())


def scrape(
    address: str = "127.0.0.1", authorization: str | None = None, **kwargs: Any
) -> HttpResponse:
    headers = {} if authorization is None else {"Authorization": authorization}
    request = RequestFactory().get("/metrics", REMOTE_ADDR=address, headers=headers)
    response = metrics_view(request, **kwargs)
    assert isinstance(response, HttpResponse)
    return response


class TestAllow:
    def test_an_address_in_an_allowed_network(self) -> None:
        """A client inside an allowed network gets the metrics."""
        response = scrape("10.1.2.3", allow=["10.0.0.0/8"])
        assert response.status_code == 200
        assert b"routerkit_route_decisions" in response.content

    def test_an_ipv4_mapped_address_matches_an_ipv4_network(self) -> None:
        """A dual-stack server's ::ffff:10.1.2.3 is the IPv4 client 10.1.2.3."""
        assert scrape("::ffff:10.1.2.3", allow=["10.0.0.0/8"]).status_code == 200

    def test_an_ipv4_mapped_address_outside_the_network(self) -> None:
        """Unmapping lets in only the IPv4 addresses the list allows."""
        assert scrape("::ffff:192.168.1.1", allow=["10.0.0.0/8"]).status_code == 403

    def test_an_address_outside_every_network_is_forbidden(self) -> None:
        """Any other client gets 403."""
        assert scrape("192.168.1.1", allow=["10.0.0.0/8", "::1"]).status_code == 403

    def test_entries_with_stray_spaces(self) -> None:
        """Spaces around an entry (a list split from an environment variable) are ignored."""
        allow = [" 10.0.0.0/8", "192.168.1.1 "]
        assert scrape("10.1.2.3", allow=allow).status_code == 200
        assert scrape("192.168.1.1", allow=allow).status_code == 200

    def test_an_invalid_entry_is_a_configuration_error(self) -> None:
        """A malformed entry raises ImproperlyConfigured naming it, whoever the client is."""
        with pytest.raises(ImproperlyConfigured, match=r"'10\.0\.0\.0/33'"):
            scrape("10.1.2.3", allow=["10.0.0.0/8", "10.0.0.0/33"])

    def test_a_bare_string_is_a_configuration_error(self) -> None:
        """allow="10.0.0.0/8" is not read as a list of its characters."""
        with pytest.raises(ImproperlyConfigured, match="must be a list"):
            scrape("10.1.2.3", allow="10.0.0.0/8")


class TestToken:
    def test_the_right_token(self) -> None:
        """Authorization: Bearer <token> gets the metrics."""
        assert scrape(authorization=f"Bearer {TOKEN}", token=TOKEN).status_code == 200

    def test_a_wrong_token(self) -> None:
        """Any other token gets 401 with a Bearer challenge."""
        response = scrape(authorization="Bearer guess", token=TOKEN)
        assert response.status_code == 401
        assert response["WWW-Authenticate"] == 'Bearer realm="metrics"'

    def test_no_token(self) -> None:
        """A request without Authorization gets 401."""
        assert scrape(token=TOKEN).status_code == 401

    def test_an_empty_token_is_a_configuration_error(self) -> None:
        """token="" (an unset secret) raises instead of accepting "Bearer "."""
        with pytest.raises(ImproperlyConfigured, match="token is empty"):
            scrape(authorization="Bearer ", token="")
