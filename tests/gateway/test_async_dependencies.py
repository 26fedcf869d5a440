"""Every route's endpoint and dependencies are coroutines (issue #17: the gateway's CPU per
request): FastAPI runs a plain `def` in the thread pool, a thread hand-off each way."""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from typing import Any

from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from services.gateway.app import create_app
from services.gateway.clients import ServiceClients
from services.gateway.settings import GatewaySettings


def _routes(routes: list[Any]) -> Iterator[Any]:
    for route in routes:
        included = getattr(route, "original_router", None)  # FastAPI 0.16x's included router
        yield from _routes(included.routes) if included is not None else [route]


def _sync_calls(dependant: Dependant) -> Iterator[str]:
    for sub in dependant.dependencies:
        call = sub.call
        if call is not None and not (
            inspect.iscoroutinefunction(call)
            or inspect.iscoroutinefunction(type(call).__call__)  # a callable instance
        ):
            yield f"{call.__module__}.{call.__qualname__}"
        yield from _sync_calls(sub)


async def test_no_route_runs_in_the_thread_pool(
    settings: GatewaySettings, clients: ServiceClients
) -> None:
    app = create_app(settings, clients)
    try:
        routes = [route for route in _routes(app.routes) if isinstance(route, APIRoute)]
        assert len(routes) > 50  # the walk reached the included routers' routes
        sync = {
            f"{sorted(route.methods or ())} {route.path}: {name}"
            for route in routes
            for name in ([] if inspect.iscoroutinefunction(route.endpoint) else ["<endpoint>"])
            + list(_sync_calls(route.dependant))
        }
        assert not sync, sorted(sync)
    finally:
        await app.state.security.close()
