"""Property-based requests generated from the OpenAPI document against a live gateway (subprocess):
whatever the parameters, the answer is never a server error."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from tests.helpers.entries import entries
from tests.helpers.nats import NatsServer, free_port
from tests.helpers.services import ServiceProcess, service_env
from tests.integration.test_store_writer import publish
from wiretide.gateway.api.openapi import document

# The agents, console, tools and MCP routes need the agents service and an LLM this fixture does not
# run; their own tests cover their bad input (test_agents_*.py, test_console.py, test_mcp.py).
NEEDS_AGENTS_OR_LLM = "^/(api/agents|api/console|api/tools|mcp)"
schema = schemathesis.openapi.from_dict(document()).exclude(path_regex=NEEDS_AGENTS_OR_LLM)


@pytest.fixture(scope="module")
def live_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp: Path = tmp_path_factory.mktemp("fuzz")
    nats = NatsServer(tmp / "nats")
    nats.start()
    port = free_port()
    env = service_env(nats.url, tmp / "data", WIRETIDE_GATEWAY_HTTP=f"127.0.0.1:{port}")
    gw = ServiceProcess("gateway", env, tmp / "gw.log")
    tracer = ServiceProcess("tracer", env, tmp / "tracer.log")  # /api/traces and /api/servicemap ask it
    gw.start()
    tracer.start()
    try:
        gw.wait_health("SERVING")
        tracer.wait_health("SERVING")
        asyncio.run(publish(nats.url, [entries(200, seed=4)]))
        yield f"http://127.0.0.1:{port}"
    finally:
        gw.kill()
        tracer.kill()
        nats.stop()


@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_request_gets_a_server_error(case: Any, live_gateway: str) -> None:
    case.call_and_validate(base_url=live_gateway, checks=[not_a_server_error], timeout=30)
