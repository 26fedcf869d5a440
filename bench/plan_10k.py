"""Validate and plan a 10,000-node workflow; print the median of 5 timed runs.

Run from the repository root (with the project installed, or ``PYTHONPATH=.``)::

    python bench/plan_10k.py [--nodes 10000] [--runs 5]

Two figures: "cold" clears the template caches before each run (a definition seen for the
first time: every template string is parsed), "warm" keeps them (re-validating a saved
definition, or planning it right after validation, as the save path does).
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from typing import Any

from libs.common import expressions
from services.workflow.planner import ExecutionPlan
from services.workflow.validation import validate_definition
from tests.unit.catalog import core_catalog


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
                    "expression": f"{{{{ {parents[0][0]}.value | default(0) > 3 }}}}"
                }
            elif roll < 0.04:
                kind = "merge"
                params = {"mode": rng.choice(["all", "any"])}
            elif roll < 0.5:
                kind = "template"
                source = parents[0][0]
                if len(layers) > 3 and rng.random() < 0.2:
                    older = rng.choice(layers[-3])[0]
                    edges.append({"source": older, "target": node_id})
                    source = older
                params = {
                    "template": f"Summarize {{{{ {source}.text }}}} for {{{{ inputs.topic }}}}"
                }
            elif roll < 0.6:
                kind = "transform"
                params = {"expression": f"{parents[0][0]}.value * 2"}
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

    def once() -> tuple[float, float]:
        started = time.perf_counter()
        report = validate_definition(raw, catalog)
        validated = time.perf_counter()
        if not report.valid or report.definition is None:
            raise SystemExit(f"bench definition is invalid: {report.errors[:3]}")
        ExecutionPlan.build(report.definition, catalog)
        return validated - started, time.perf_counter() - validated

    once()  # warm-up: imports, jsonschema validators, code paths
    print(f"{args.nodes} nodes, {len(raw['edges'])} edges, {args.runs} runs")
    for label, clear in (("cold", True), ("warm", False)):
        totals, validations, plans = [], [], []
        for _ in range(args.runs):
            if clear:
                expressions.clear_caches()
            validation, planning = once()
            validations.append(validation)
            plans.append(planning)
            totals.append(validation + planning)
        print(
            f"validate+plan {args.nodes} nodes ({label} template cache): "
            f"median {statistics.median(totals):.3f} s "
            f"(min {min(totals):.3f}, max {max(totals):.3f}; "
            f"validate {statistics.median(validations):.3f}, plan {statistics.median(plans):.3f})"
        )


if __name__ == "__main__":
    main()
