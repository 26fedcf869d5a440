"""Node presets through the HTTP API: create (params checked against the type's schema),
list by type, new versions, read any version, delete; per tenant; only the creator or an
admin changes a preset."""

from __future__ import annotations

import uuid

import httpx

from libs.cli.stack import Stack
from services.gateway.auth import ADMIN_SCOPES
from tests.security.support import bearer, new_key

PRESET = {
    "node_type": "http_request",
    "name": "status page",
    "description": "GET the status page",
    "params": {"method": "GET", "url": "https://status.example.com"},
}


async def test_create_list_version_read_delete(client: httpx.AsyncClient) -> None:
    response = await client.post("/api/v1/node-presets", json=PRESET)
    assert response.status_code == 201, response.text
    created = response.json()
    preset_id = created["id"]
    assert created["version"] == 1 and created["params"] == PRESET["params"]
    assert response.headers["location"] == f"/api/v1/node-presets/{preset_id}"
    other = await client.post(
        "/api/v1/node-presets",
        json={"node_type": "delay", "name": "a second", "params": {"seconds": 1}},
    )
    assert other.status_code == 201, other.text

    response = await client.post("/api/v1/node-presets", json=PRESET)
    assert response.status_code == 409  # one name per type

    response = await client.put(
        f"/api/v1/node-presets/{preset_id}",
        json={"params": {"method": "HEAD", "url": "https://status.example.com"}},
    )
    assert response.status_code == 200, response.text
    assert response.json()["version"] == 2 and response.json()["name"] == "status page"

    listed = (await client.get("/api/v1/node-presets", params={"node_type": "http_request"})).json()
    assert [(p["id"], p["version"]) for p in listed["items"]] == [(preset_id, 2)]
    assert listed["total"] == 1
    everything = (await client.get("/api/v1/node-presets")).json()
    assert {p["node_type"] for p in everything["items"]} == {"http_request", "delay"}

    first = (await client.get(f"/api/v1/node-presets/{preset_id}", params={"version": 1})).json()
    assert first["params"]["method"] == "GET"
    current = (await client.get(f"/api/v1/node-presets/{preset_id}")).json()
    assert current["params"]["method"] == "HEAD"
    versions = (await client.get(f"/api/v1/node-presets/{preset_id}/versions")).json()
    assert [v["version"] for v in versions] == [2, 1]
    missing = await client.get(f"/api/v1/node-presets/{preset_id}", params={"version": 7})
    assert missing.status_code == 404

    assert (await client.delete(f"/api/v1/node-presets/{preset_id}")).status_code == 204
    assert (await client.get(f"/api/v1/node-presets/{preset_id}")).status_code == 404
    # The name is free again.
    assert (await client.post("/api/v1/node-presets", json=PRESET)).status_code == 201


async def test_params_are_checked_against_the_node_type(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/api/v1/node-presets", json={**PRESET, "params": {"method": 7, "url": "x"}}
    )
    assert response.status_code == 422, response.text
    assert response.json()["error"]["details"][0]["field"] == "params.method"
    response = await client.post("/api/v1/node-presets", json={**PRESET, "node_type": "nope"})
    assert response.status_code == 422
    assert "unknown node type" in response.json()["error"]["message"]


async def test_tenants_and_ownership(stack: Stack, client: httpx.AsyncClient) -> None:
    response = await client.post("/api/v1/node-presets", json={**PRESET, "name": uuid.uuid4().hex})
    preset_id = response.json()["id"]
    other_tenant, _ = await new_key(stack, tenant="other", scopes=ADMIN_SCOPES, name="other")
    member, _ = await new_key(stack, name="member")
    reader, _ = await new_key(stack, name="reader", scopes=("read",))
    async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=30) as http:
        path = f"/api/v1/node-presets/{preset_id}"
        foreign = await http.get(path, headers=bearer(other_tenant))
        assert foreign.status_code == 404
        listed = await http.get("/api/v1/node-presets", headers=bearer(other_tenant))
        assert listed.json()["total"] == 0
        assert (await http.delete(path, headers=bearer(other_tenant))).status_code == 404

        # A member reads it but may not change the admin's preset; may create their own.
        assert (await http.get(path, headers=bearer(member))).status_code == 200
        change = {"params": {"method": "GET", "url": "https://x.example.com"}}
        assert (await http.put(path, json=change, headers=bearer(member))).status_code == 403
        assert (await http.delete(path, headers=bearer(member))).status_code == 403
        mine = await http.post(
            "/api/v1/node-presets", json={**PRESET, "name": "mine"}, headers=bearer(member)
        )
        assert mine.status_code == 201
        mine_path = f"/api/v1/node-presets/{mine.json()['id']}"
        assert (await http.put(mine_path, json=change, headers=bearer(member))).status_code == 200
        # A read-only key reads, never writes.
        assert (await http.get(path, headers=bearer(reader))).status_code == 200
        refused = await http.post(
            "/api/v1/node-presets", json={**PRESET, "name": "r"}, headers=bearer(reader)
        )
        assert refused.status_code == 403
        # The admin (the stack's key) may change anyone's.
        assert (await client.delete(mine_path)).status_code == 204
