// Auto-layout of a workflow graph with dagre (left to right), shared by the editor and the
// execution view.
import dagre from "@dagrejs/dagre";
import type { Node } from "@xyflow/react";

export const NODE_WIDTH = 200;
export const NODE_HEIGHT = 64;

/** An edge as the layout sees it: its ends and the output port it leaves. */
export interface LayoutEdge {
  source: string;
  target: string;
  port?: string;
}

/** Where a port comes among its node's output ports (top first); undefined: no preference. */
export type PortRank = (source: string, port: string) => number | undefined;

/** The order of the common branching ports when nothing more is known: `true` above `false`,
 * the unconditional `out` and `error` below. */
export function defaultPortRank(port: string): number | undefined {
  return { true: 0, false: 1, default: 50, out: 100, error: 101 }[port];
}

/** Ordering constraints that keep a branching node's targets in the order of its ports (a
 * condition's `true` branch above its `false` one), so that its edges do not cross. A target
 * reached from two ports of the same node gets no constraint. */
function portConstraints(edges: LayoutEdge[], rank: PortRank): { left: string; right: string }[] {
  const bySource = new Map<string, Map<string, number>>();
  for (const edge of edges) {
    const order = rank(edge.source, edge.port ?? "out");
    if (order === undefined) continue;
    let targets = bySource.get(edge.source);
    if (!targets) bySource.set(edge.source, (targets = new Map()));
    const seen = targets.get(edge.target);
    targets.set(edge.target, seen === undefined || seen === order ? order : Number.NaN);
  }
  const constraints: { left: string; right: string }[] = [];
  for (const targets of bySource.values()) {
    const ordered = [...targets.entries()].filter(([, order]) => !Number.isNaN(order)).sort((a, b) => a[1] - b[1]);
    for (let index = 1; index < ordered.length; index += 1) {
      const [left, leftOrder] = ordered[index - 1];
      const [right, rightOrder] = ordered[index];
      if (leftOrder !== rightOrder) constraints.push({ left, right });
    }
  }
  return constraints;
}

export function layout<N extends Node>(nodes: N[], edges: LayoutEdge[], rank: PortRank = (_, port) => defaultPortRank(port)): N[] {
  const graph = new dagre.graphlib.Graph();
  graph.setGraph({ rankdir: "LR", nodesep: 30, ranksep: 70 });
  graph.setDefaultEdgeLabel(() => ({}));
  for (const node of nodes) {
    graph.setNode(node.id, {
      width: node.measured?.width ?? NODE_WIDTH,
      height: node.measured?.height ?? NODE_HEIGHT,
    });
  }
  const ids = new Set(nodes.map((node) => node.id));
  const drawn = edges.filter((edge) => ids.has(edge.source) && ids.has(edge.target));
  for (const edge of drawn) graph.setEdge(edge.source, edge.target);
  // In a left-to-right layout dagre's order within a rank runs top to bottom.
  dagre.layout(graph, { constraints: portConstraints(drawn, rank) });
  return nodes.map((node) => {
    const at = graph.node(node.id);
    const width = node.measured?.width ?? NODE_WIDTH;
    const height = node.measured?.height ?? NODE_HEIGHT;
    return { ...node, position: { x: at.x - width / 2, y: at.y - height / 2 } };
  });
}
