// The read-only DAG of an execution: the definition's nodes (saved positions, else dagre),
// each colored by its live status.
import { memo, useMemo } from "react";
import {
  Background,
  Controls,
  Handle,
  MarkerType,
  Position,
  ReactFlow,
  type Edge,
  type Node,
  type NodeProps,
} from "@xyflow/react";
import { useTheme } from "../lib/theme";
import { NODE_HEIGHT, NODE_WIDTH, defaultPortRank, layout } from "../lib/layout";
import type { Definition } from "../lib/types";
import type { NodeRunDetail, NodeStream } from "./executionState";
import { formatDuration } from "./format";

type ExecNodeData = {
  nodeId: string;
  nodeType: string;
  run: NodeRunDetail | undefined;
  streaming: boolean;
  selected: boolean;
};
type ExecNode = Node<ExecNodeData, "exec">;

const STATUS_LABEL: Record<string, string> = {
  pending: "pending",
  queued: "queued",
  running: "running",
  retrying: "retrying",
  succeeded: "succeeded",
  failed: "failed",
  skipped: "skipped",
  cached: "cached",
  cancelled: "cancelled",
  waiting: "waiting for input",
};

/** A delay's timer, an agent's tool approval, or a person's input. */
function waitingLabel(waiting: unknown): string {
  const record = (waiting ?? {}) as Record<string, unknown>;
  if (record.delay) return "waiting on a timer";
  if (record.approval) return "waiting for approval";
  return STATUS_LABEL.waiting;
}

const ExecNodeView = memo(function ExecNodeView({ data }: NodeProps<ExecNode>) {
  const status = data.run?.status ?? "pending";
  const attempts = data.run?.attempts ?? 0;
  const duration = data.run?.duration_ms;
  const label = status === "waiting" ? waitingLabel(data.run?.waiting) : (STATUS_LABEL[status] ?? status);
  return (
    <div
      className={`ev-node st-${status}${data.selected ? " selected" : ""}`}
      data-testid={`exec-node-${data.nodeId}`}
      data-status={status}
      title={`${data.nodeId} (${data.nodeType}): ${label}`}
    >
      <Handle type="target" position={Position.Left} isConnectable={false} />
      <div className="ev-node-top">
        <span className="ev-node-dot" />
        <span className="ev-node-id">{data.nodeId}</span>
        <span className="ev-node-type">{data.nodeType}</span>
      </div>
      <div className="ev-node-bottom">
        <span>{label}</span>
        {attempts > 1 && <span>· attempt {attempts}</span>}
        {data.streaming && status === "running" && <span>· streaming</span>}
        {typeof duration === "number" && <span className="ev-node-time">{formatDuration(duration)}</span>}
      </div>
      <Handle type="source" position={Position.Right} isConnectable={false} />
    </div>
  );
});

const nodeTypes = { exec: ExecNodeView };

export function ExecutionGraph({
  definition,
  runs,
  streams,
  selected,
  onSelect,
}: {
  definition: Definition;
  runs: Record<string, NodeRunDetail>;
  streams: Record<string, NodeStream>;
  selected: string | null;
  onSelect: (nodeId: string | null) => void;
}) {
  const { theme } = useTheme();
  // Positions depend only on the definition: statuses change, the drawing stays put.
  const positions = useMemo(() => {
    const defs = definition.nodes;
    const saved = defs.length > 0 && defs.every((node) => node.position && Number.isFinite(node.position.x));
    if (saved) return Object.fromEntries(defs.map((node) => [node.id, node.position!]));
    const placed = layout(
      defs.map((node) => ({ id: node.id, position: { x: 0, y: 0 }, data: {}, width: NODE_WIDTH, height: NODE_HEIGHT })),
      definition.edges.map((edge) => ({ source: edge.source, target: edge.target, port: edge.source_port })),
      (source, port) => {
        // A switch's case ports top to bottom in the order of its cases.
        const cases = definition.nodes.find((node) => node.id === source)?.params?.cases;
        const index = Array.isArray(cases) ? cases.map(String).indexOf(port) : -1;
        return index >= 0 ? index : defaultPortRank(port);
      },
    );
    return Object.fromEntries(placed.map((node) => [node.id, node.position]));
  }, [definition]);

  const nodes = useMemo<ExecNode[]>(
    () =>
      definition.nodes.map((node) => ({
        id: node.id,
        type: "exec",
        position: positions[node.id] ?? { x: 0, y: 0 },
        width: NODE_WIDTH,
        height: NODE_HEIGHT,
        draggable: false,
        connectable: false,
        selectable: true,
        data: {
          nodeId: node.id,
          nodeType: runs[node.id]?.type || node.type,
          run: runs[node.id],
          streaming: Boolean(streams[node.id]?.text),
          selected: node.id === selected,
        },
      })),
    [definition, positions, runs, streams, selected],
  );

  const edges = useMemo<Edge[]>(
    () =>
      definition.edges.map((edge, index) => {
        const source = runs[edge.source]?.status;
        const target = runs[edge.target]?.status;
        const dead = target === "skipped" || target === "cancelled";
        const done = source === "succeeded" || source === "cached";
        return {
          id: `e${index}-${edge.source}-${edge.target}`,
          source: edge.source,
          target: edge.target,
          label: edge.source_port && edge.source_port !== "output" ? edge.source_port : undefined,
          animated: target === "running" || target === "retrying",
          className: dead ? "ev-edge dead" : done ? "ev-edge done" : "ev-edge",
          markerEnd: { type: MarkerType.ArrowClosed, width: 16, height: 16 },
          focusable: false,
          selectable: false,
        };
      }),
    [definition, runs],
  );

  return (
    <div className="ev-graph" data-testid="execution-graph">
      <ReactFlow<ExecNode, Edge>
        nodes={nodes}
        edges={edges}
        nodeTypes={nodeTypes}
        nodesDraggable={false}
        nodesConnectable={false}
        elementsSelectable={false}
        edgesFocusable={false}
        fitView
        fitViewOptions={{ padding: 0.2, maxZoom: 1.1 }}
        minZoom={0.2}
        colorMode={theme}
        onNodeClick={(_, node) => onSelect(node.id)}
        onPaneClick={() => onSelect(null)}
      >
        <Background gap={16} size={1} />
        <Controls showInteractive={false} />
      </ReactFlow>
    </div>
  );
}
