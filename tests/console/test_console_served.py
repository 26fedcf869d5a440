"""The gateway serves the built console at `/` and tells it what it needs before sign-in."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import httpx

from libs.cli.stack import Stack
from services.gateway.routes.console import CONSOLE_DIST

CONSOLE = Path(__file__).resolve().parents[2] / "console"


async def test_index_and_assets_are_served_with_a_strict_policy(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.gateway_url) as http:
        index = await http.get("/")
        assert index.status_code == 200
        assert index.headers["content-type"].startswith("text/html")
        assert "script-src 'self'" in index.headers["content-security-policy"]
        assert index.headers["cache-control"] == "no-cache"
        scripts = re.findall(r'src="(/assets/[^"]+\.js)"', index.text)
        assert scripts, index.text
        asset = await http.get(scripts[0])
        assert asset.status_code == 200
        assert "immutable" in asset.headers["cache-control"]
        missing = await http.get("/assets/nope.js")
        assert missing.status_code == 404
        assert missing.json()["error"]["code"]


async def test_the_embedded_stack_offers_its_development_key_to_loopback_callers(
    stack: Stack,
) -> None:
    async with httpx.AsyncClient(base_url=stack.gateway_url) as http:
        config = (await http.get("/console/config")).json()
        assert config["dev_api_key"] == stack.admin_key
        assert config["dev_api_key"]
        workflows = await http.get(
            "/api/v1/workflows", headers={"Authorization": f"Bearer {config['dev_api_key']}"}
        )
        assert workflows.status_code == 200


async def test_a_remote_caller_is_not_offered_the_development_key(stack: Stack) -> None:
    app = stack.services["gateway"].app
    transport = httpx.ASGITransport(app=app, client=("203.0.113.9", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as http:
        config = (await http.get("/console/config")).json()
    assert config["dev_api_key"] is None


def test_the_committed_build_matches_the_console_source(tmp_path: Path) -> None:
    """services/gateway/console_dist is what `make console` builds from console/ now (as
    tests/unit/test_protos_fresh.py does for the generated gRPC code)."""
    if not (CONSOLE / "node_modules").is_dir():
        subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund"], cwd=CONSOLE, check=True, capture_output=True
        )
    subprocess.run(
        ["npx", "vite", "build", "--outDir", str(tmp_path), "--emptyOutDir", "--logLevel", "error"],
        cwd=CONSOLE,
        check=True,
        capture_output=True,
    )
    built = {p.relative_to(tmp_path): p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    committed = {
        p.relative_to(CONSOLE_DIST): p.read_bytes() for p in CONSOLE_DIST.rglob("*") if p.is_file()
    }
    assert sorted(built) == sorted(committed), "run `make console` and commit the build"
    assert built == committed, "run `make console` and commit the build"


async def test_the_sign_in_check_answers_200_for_a_refused_key(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.gateway_url) as http:
        good = await http.get(
            "/console/session", headers={"Authorization": f"Bearer {stack.admin_key}"}
        )
        assert good.status_code == 200
        assert good.json()["signed_in"] is True and good.json()["tenant_id"]
        for headers in ({"Authorization": "Bearer hk_000000000000_wrong"}, {}):
            refused = await http.get("/console/session", headers=headers)
            assert refused.status_code == 200
            assert refused.json()["signed_in"] is False and refused.json()["message"]
            assert refused.json()["tenant_id"] is None
        # The API itself still refuses the wrong key with 401.
        api = await http.get(
            "/api/v1/workflows", headers={"Authorization": "Bearer hk_000000000000_wrong"}
        )
        assert api.status_code == 401
