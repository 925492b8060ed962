"""The health endpoint: routes, readiness and address parsing, over a real TCP socket."""

import asyncio

import httpx
import pytest

from kubefence.nri.health import HealthServer, parse_address
from kubefence.nri.metrics import Metrics


@pytest.mark.parametrize(
    ("address", "expected"),
    [("127.0.0.1:9090", ("127.0.0.1", 9090)), (":9090", ("0.0.0.0", 9090)), ("[::1]:80", ("::1", 80))],
    ids=["ipv4", "all-interfaces", "ipv6"],
)
def test_parse_address_valid(address, expected):
    assert parse_address(address) == expected


@pytest.mark.parametrize("address", ["9090", "host:", "host:70000", "host:http"])
def test_parse_address_invalid_raises(address):
    with pytest.raises(ValueError, match=repr(address).replace("[", r"\[")):
        parse_address(address)


def test_health_server_routes():
    async def scenario():
        ready = [False]
        metrics = Metrics()
        metrics.decisions.labels(decision="inject").inc()
        server = HealthServer("127.0.0.1:0", metrics, lambda: ready[0])
        await server.start()
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as client:
                assert (await client.get("/healthz")).status_code == 200
                assert (await client.get("/readyz")).status_code == 503
                ready[0] = True
                assert (await client.get("/readyz")).status_code == 200
                response = await client.get("/metrics")
                assert response.status_code == 200
                assert 'kubefence_nri_decisions_total{decision="inject"} 1.0' in response.text
                assert (await client.get("/nope")).status_code == 404
                assert (await client.post("/healthz")).status_code == 405
        finally:
            await server.close()

    asyncio.run(scenario())
