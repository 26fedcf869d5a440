"""Validate and plan a 10,000-node workflow; print the median of 5 timed runs.

    .venv/bin/python bench/plan_10k.py [--nodes 10000] [--runs 5]
    .venv/bin/python bench/plan_10k.py --nodes 100000 --runs 3   # issue #17's scale target

The definition limits (the workflow service's max_definition_nodes / _edges settings, 10,000
and 50,000 by default) are raised to the bench's size, as a deployment that wants such
workflows sets them.

The node types are the node service's real registry (their params schemas included).

Two figures: "cold" clears the template caches before each run (a definition seen for the
first time: every template string is parsed), "warm" keeps them (re-validating a saved
definition, or planning it right after validation, as the save path does). CPU time is
printed too: on a shared machine the wall-clock figures include time spent waiting for a
core.
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import time
from typing import Any

from engine import calibration_ms  # bench/engine.py, beside this file

from libs.common import expressions
from services.node.registry import default_registry
from services.workflow.planner import ExecutionPlan
from services.workflow.validation import validate_definition


def core_catalog() -> dict[str, Any]:
    return {spec.type: spec for spec in default_registry().specs()}


#: The output field a template reads from each kind of node (validation refuses fields a
#: closed output schema lacks; noop passes its inputs through, so any field may be there).
OUTPUT_FIELD = {
    "input": "topic",
    "condition": "result",
    "merge": "items",
    "template": "text",
    "transform": "value",
    "noop": "text",
}


def build_definition(node_count: int, seed: int = 7) -> dict[str, Any]:
    """A layered DAG: 100-wide layers, fan-out and fan-in of 1-3 edges, a template on
    about half the nodes (most reading a parent, some an older ancestor), a condition every
    ~100 nodes with true/false branches, and merges (half of them "any")."""
    rng = random.Random(seed)
    width = 100
    nodes: list[dict[str, Any]] = [{"id": "start", "type": "input"}]
    edges: list[dict[str, Any]] = []
    layers: list[list[tuple[str, str]]] = [[("start", "input")]]
    while len(nodes) < node_count:
        previous = layers[-1]
        layer: list[tuple[str, str]] = []
        for _ in range(min(width, node_count - len(nodes))):
            node_id = f"n{len(nodes)}"
            roll = rng.random()
            parents = rng.sample(previous, k=min(len(previous), rng.randint(1, 3)))
            if roll < 0.01:
                kind = "condition"
                params: dict[str, Any] = {
                    "expression": f"{{{{ {parents[0][0]}.{OUTPUT_FIELD[parents[0][1]]} "
                    "| default(0) > 3 }}"
                }
            elif roll < 0.04:
                kind = "merge"
                params = {"mode": rng.choice(["all", "any"])}
            elif roll < 0.5:
                kind = "template"
                source, source_kind = parents[0]
                if len(layers) > 3 and rng.random() < 0.2:
                    source, source_kind = rng.choice(layers[-3])
                    edges.append({"source": source, "target": node_id})
                field = OUTPUT_FIELD[source_kind]
                params = {
                    "template": f"Summarize {{{{ {source}.{field} }}}} for {{{{ inputs.topic }}}}"
                }
            elif roll < 0.6:
                kind = "transform"
                params = {"expression": f"{parents[0][0]}.{OUTPUT_FIELD[parents[0][1]]} * 2"}
            else:
                kind = "noop"
                params = {}
            for parent, parent_kind in parents:
                edge: dict[str, Any] = {"source": parent, "target": node_id}
                if parent_kind == "condition":
                    edge["source_port"] = rng.choice(["true", "false"])
                edges.append(edge)
            nodes.append(
                {
                    "id": node_id,
                    "type": kind,
                    "params": params,
                    "position": {"x": len(layers) * 200, "y": len(layer) * 80},
                }
            )
            layer.append((node_id, kind))
        layers.append(layer)
    return {
        "name": "bench-10k",
        "inputs": {"topic": {"type": "string", "required": True}},
        "nodes": nodes,
        "edges": edges,
        "outputs": {"last": f"{{{{ {layers[-1][0][0]} }}}}"},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    catalog = core_catalog()
    raw = build_definition(args.nodes)

    def once() -> tuple[float, float, float]:
        cpu_started = time.process_time()
        started = time.perf_counter()
        report = validate_definition(
            raw, catalog, max_nodes=len(raw["nodes"]), max_edges=len(raw["edges"])
        )
        validated = time.perf_counter()
        if not report.valid or report.definition is None:
            raise SystemExit(f"bench definition is invalid: {report.errors[:3]}")
        ExecutionPlan.build(report.definition, catalog, report.graph)  # as the save path does
        # the garbage collector's deferred pass is part of the cost: pay it here
        gc.collect(0)
        finished = time.perf_counter()
        return validated - started, finished - validated, time.process_time() - cpu_started

    once()  # warm-up: imports, jsonschema validators, code paths
    print(
        f"{args.nodes} nodes, {len(raw['edges'])} edges, {args.runs} runs; "
        f"CPU calibration {calibration_ms():.0f} ms (~175 ms: the VM at full speed)"
    )
    for label, clear in (("cold", True), ("warm", False)):
        totals: list[float] = []
        validations: list[float] = []
        plans: list[float] = []
        cpus: list[float] = []
        for _ in range(args.runs):
            if clear:
                expressions.clear_caches()
            validation, planning, cpu = once()
            validations.append(validation)
            plans.append(planning)
            totals.append(validation + planning)
            cpus.append(cpu)
        print(
            f"validate+plan {args.nodes} nodes ({label} template cache): "
            f"median {statistics.median(totals):.3f} s "
            f"(min {min(totals):.3f}, max {max(totals):.3f}; "
            f"validate {statistics.median(validations):.3f}, plan {statistics.median(plans):.3f}; "
            f"CPU {statistics.median(cpus):.3f} s)"
        )


if __name__ == "__main__":
    main()
