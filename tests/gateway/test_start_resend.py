"""POST /execute chooses the execution's id, so its StartExecution is sent again when the
call breaks (the replica gone, a reset): a repeat with the id answers the same execution.
A status the service chose (an invalid argument, a workflow not found) is not sent again."""

from __future__ import annotations

import uuid
from typing import Any

import grpc
import httpx
import pytest
from grpc.aio import AioRpcError, Metadata

from libs.common.errors import HeddleError, InvalidArgument, error_trailer
from services.gateway.clients import ServiceClients
from tests.gateway.conftest import Fakes, create_workflow


def _failing_first(clients: ServiceClients, error: AioRpcError) -> list[str]:
    """The gateway's first StartExecution fails with `error` (a broken call, or the
    service's answer); every start's execution_id is recorded."""
    stub = clients.workflow
    start = stub.StartExecution
    ids: list[str] = []

    async def failing_first(request: Any, **kwargs: Any) -> Any:
        ids.append(request.execution_id)
        if len(ids) == 1:
            raise error
        return await start(request, **kwargs)

    stub.StartExecution = failing_first
    return ids


async def test_a_broken_start_is_sent_again_with_the_same_id(
    fakes: Fakes, clients: ServiceClients, client: httpx.AsyncClient
) -> None:
    reset = AioRpcError(grpc.StatusCode.INTERNAL, Metadata(), Metadata(), "RST_STREAM")
    ids = _failing_first(clients, reset)
    workflow_id = await create_workflow(client)
    response = await client.post(f"/api/v1/workflows/{workflow_id}/execute", json={})
    assert response.status_code == 202, response.text
    assert len(ids) == 2 and ids[0] == ids[1]
    assert str(uuid.UUID(ids[0])) == ids[0]  # a uuid the gateway chose
    another = await client.post(f"/api/v1/workflows/{workflow_id}/execute", json={})
    assert another.status_code == 202, another.text
    assert len(ids) == 3 and ids[2] != ids[0]  # one per request


@pytest.mark.parametrize(
    ("refusal", "status"),
    [(InvalidArgument("bad inputs"), 422), (HeddleError("a bug of the service's"), 500)],
)
async def test_a_start_the_service_refused_is_not_sent_again(
    fakes: Fakes,
    clients: ServiceClients,
    client: httpx.AsyncClient,
    refusal: HeddleError,
    status: int,
) -> None:
    """Its error's trailer says the service chose the status (INTERNAL too)."""
    answered = AioRpcError(
        refusal.grpc_status, Metadata(), Metadata(*error_trailer(refusal)), refusal.message
    )
    ids = _failing_first(clients, answered)
    workflow_id = await create_workflow(client)
    response = await client.post(f"/api/v1/workflows/{workflow_id}/execute", json={})
    assert response.status_code == status, response.text
    assert len(ids) == 1
