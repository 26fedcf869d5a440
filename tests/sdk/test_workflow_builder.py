"""The Workflow builder: the definition it produces, and that the gateway accepts it
(POST /api/v1/workflows/validate on a real embedded stack)."""

from __future__ import annotations

import httpx
import pytest
from heddle_sdk import Retry, Workflow


def branching() -> Workflow:
    wf = Workflow("triage", description="route by length")
    text = wf.input("text", type="string", required=True)
    start = wf.node("input", id="start")
    measure = wf.node(
        "transform",
        id="measure",
        expression=f"{text} | length",
        after=start,
        retry=Retry(max_attempts=3, initial_delay_s=0.1),
        timeout_s=5,
        cache=3600,
    )
    check = wf.node("condition", id="check", expression="{{ measure.value > 3 }}", after=measure)
    long = wf.node("template", id="long", template=f"long: {text}", after=check.port("true"))
    short = wf.node(
        "template",
        id="short",
        template="short",
        after=check.port("false"),
        on_error="continue",
        default_output={"text": ""},
        retry=2,
    )
    joined = wf.node("merge", params={"mode": "any"}, after=[long, short])
    wf.output("text", joined["items"])
    return wf


def test_the_builder_writes_the_definition_json() -> None:
    definition = branching().to_dict()
    assert definition["name"] == "triage"
    assert definition["inputs"] == {"text": {"type": "string", "required": True}}
    nodes = {node["id"]: node for node in definition["nodes"]}
    assert nodes["measure"] == {
        "id": "measure",
        "type": "transform",
        "params": {"expression": "{{ inputs.text }} | length"},
        "retry": {
            "max_attempts": 3,
            "backoff": "exponential",
            "initial_delay_s": 0.1,
            "max_delay_s": 30.0,
            "jitter": True,
        },
        "timeout_s": 5,
        "cache": {"ttl_s": 3600},
    }
    assert nodes["short"]["retry"] == {"max_attempts": 2}
    assert nodes["short"]["on_error"] == "continue"
    assert nodes["merge_1"]["params"] == {"mode": "any"}
    assert definition["edges"] == [
        {"source": "start", "target": "measure"},
        {"source": "measure", "target": "check"},
        {"source": "check", "target": "long", "source_port": "true"},
        {"source": "check", "target": "short", "source_port": "false"},
        {"source": "long", "target": "merge_1"},
        {"source": "short", "target": "merge_1"},
    ]
    assert definition["outputs"] == {"text": "{{ merge_1.items }}"}


def test_ids_ports_and_mistakes() -> None:
    wf = Workflow("ids")
    first = wf.node("acme.slugify", text="a")
    second = wf.node("acme.slugify", text="b")
    assert (first.id, second.id) == ("slugify_1", "slugify_2")
    wf.node("acme.csv_stats", id="stats", after={"tables": [first, second]})
    assert wf.to_dict()["edges"][-1] == {
        "source": "slugify_2",
        "target": "stats",
        "target_port": "tables",
    }
    with pytest.raises(ValueError, match="duplicate"):
        wf.node("noop", id="stats")
    with pytest.raises(ValueError, match="letters"):
        wf.node("noop", id="has space")
    other = Workflow("other").node("noop", id="elsewhere")
    with pytest.raises(ValueError, match="not in workflow"):
        wf.node("noop", after=other)


async def test_the_gateway_validates_what_the_builder_writes(client: httpx.AsyncClient) -> None:
    response = await client.post("/api/v1/workflows/validate", json=branching().to_dict())
    assert response.status_code == 200, response.text
    report = response.json()
    assert report["valid"] is True, report["issues"]
    assert [i for i in report["issues"] if i["severity"] == "error"] == []

    broken = Workflow("broken")
    cond = broken.node("condition", id="cond", expression="{{ 1 > 0 }}")
    broken.node("noop", id="after_cond", after=cond.port("maybe"))
    response = await client.post("/api/v1/workflows/validate", json=broken.to_dict())
    issues = response.json()["issues"]
    assert response.json()["valid"] is False
    assert any(issue.get("edge") == 0 for issue in issues), issues
