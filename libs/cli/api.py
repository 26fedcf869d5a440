"""The CLI's HTTP client of the gateway: credentials, one-line errors, pagination.

Credentials: --api-key / HEDDLE_API_KEY when given; otherwise, when the gateway answers 401,
the development key that the embedded stack (`heddle serve`, `make run`) offers to loopback
callers at GET /console/config, the way the web console signs itself in, or else the one
`heddle up` keeps in var/dev-api-key.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

DEFAULT_SERVER = "http://127.0.0.1:8080"
#: Where `heddle serve` and `heddle up` leave their development admin key.
DEV_API_KEY_FILE = Path("var/dev-api-key")


class CliError(Exception):
    """A failure to report in one line on stderr (exit code 1)."""


def detail_lines(details: Any) -> list[str]:
    """Each located detail of an API error as `<where>: <what>`."""
    if isinstance(details, dict) and isinstance(details.get("issues"), list):
        details = details["issues"]
    if not isinstance(details, list):
        return []
    lines = []
    for detail in details:
        if not isinstance(detail, dict):
            continue
        if "loc" in detail:  # a field error of the request (FastAPI's shape)
            lines.append(f"{detail['loc']}: {detail.get('msg', '')}")
        elif detail.get("code"):  # a validation issue of a definition
            lines.append(issue_text(detail))
        elif detail.get("field") or detail.get("message"):
            where = detail.get("field") or detail.get("node_id") or ""
            lines.append(f"{where + ': ' if where else ''}{detail.get('message', '')}")
    return lines


def issue_text(issue: dict[str, Any]) -> str:
    """A validation issue as `error unknown_node_type at node a: ...`."""
    where = [
        f"node {issue['node_id']}" if issue.get("node_id") else "",
        f"edge {issue['edge']}" if issue.get("edge") is not None else "",
        f"field {issue['field']}" if issue.get("field") else "",
    ]
    location = ", ".join(part for part in where if part)
    head = " ".join(part for part in (issue.get("severity") or "error", issue.get("code")) if part)
    return f"{head}{' at ' + location if location else ''}: {issue.get('message', '')}"


def api_error(method: str, path: str, response: httpx.Response) -> CliError:
    """The gateway's `{"error": {code, message, details}}` as `code: message` + details."""
    try:
        body = response.json()["error"]
        code, message = body["code"], body["message"]
    except (ValueError, KeyError, TypeError):
        return CliError(f"{method} {path}: HTTP {response.status_code}")
    # A detail the message already spells out (a 422 lists its first ones) is not repeated.
    details = [line for line in detail_lines(body.get("details")) if line not in message]
    lines = [f"{code}: {message}", *(f"  {line}" for line in details)]
    if response.status_code == 401:
        lines.append("  (pass --api-key or set HEDDLE_API_KEY; `heddle serve` prints its key)")
    return CliError("\n".join(lines))


class Api:
    """A synchronous client of one gateway."""

    def __init__(self, server: str, api_key: str | None = None, timeout: float = 30.0) -> None:
        self.server = server.rstrip("/")
        self._explicit_key = bool(api_key)
        self._asked_for_dev_key = False
        headers = {"user-agent": "heddle-cli"}
        if api_key:
            headers["authorization"] = f"Bearer {api_key}"
        self.http = httpx.Client(base_url=self.server, headers=headers, timeout=timeout)

    def __enter__(self) -> Api:
        return self

    def __exit__(self, *exc: object) -> None:
        self.http.close()

    def close(self) -> None:
        self.http.close()

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return self.http.request(method, path, **kwargs)
        except httpx.HTTPError as error:
            raise CliError(
                f"cannot reach the gateway at {self.server}: {error}"
                " (is `heddle serve` running? --server / HEDDLE_SERVER point elsewhere)"
            ) from None

    def adopt_dev_key(self) -> bool:
        """Take a development key, once: the one the embedded stack offers to loopback
        callers, else the one `heddle up` (or `make run`) left in var/dev-api-key here."""
        if self._explicit_key or self._asked_for_dev_key:
            return False
        self._asked_for_dev_key = True
        offered: Any = None
        try:
            offered = self.http.get("/console/config").json().get("dev_api_key")
        except (httpx.HTTPError, ValueError, AttributeError):
            offered = None
        if not isinstance(offered, str) or not offered:
            try:
                offered = DEV_API_KEY_FILE.read_text().strip()
            except OSError:
                return False
        if not offered:
            return False
        self.http.headers["authorization"] = f"Bearer {offered}"
        return True

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """JSON of a successful response (None when empty); CliError otherwise."""
        response = self._send(method, path, **kwargs)
        if response.status_code == 401 and self.adopt_dev_key():
            response = self._send(method, path, **kwargs)
        if response.is_success:
            return response.json() if response.content else None
        raise api_error(method, path, response)

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> Any:
        return self.request("POST", path, **kwargs)

    def pages(self, path: str, params: dict[str, Any] | None = None) -> Iterator[dict[str, Any]]:
        """Every item of a paginated listing."""
        page = 1
        while True:
            listing = self.get(path, params={**(params or {}), "page": page, "page_size": 200})
            yield from listing["items"]
            if not listing["items"] or page * listing["page_size"] >= listing["total"]:
                return
            page += 1

    def stream(self, path: str, params: dict[str, Any]) -> httpx.Response:
        """An open streaming GET (the caller closes it); CliError unless it is 2xx."""
        for _ in range(2):
            request = self.http.build_request(
                "GET", path, params=params, timeout=httpx.Timeout(30.0, read=None)
            )
            response = self.http.send(request, stream=True)
            if response.status_code == 401 and self.adopt_dev_key():
                response.close()
                continue
            if not response.is_success:
                response.read()
                response.close()
                raise api_error("GET", path, response)
            return response
        raise AssertionError("unreachable")  # pragma: no cover


def dumps(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False)
