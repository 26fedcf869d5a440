// The canvas node: type badge, label and id, an input handle per input port on the left and
// an output handle per output port on the right; red with the first problem when validation
// reports one on it.
import { createContext, memo, useContext, useEffect } from "react";
import { Handle, Position, useUpdateNodeInternals, type NodeProps } from "@xyflow/react";
import type { NodeTypeSpec, ValidationIssue } from "../lib/types";
import { portsOf, type FlowNode } from "./model";

export interface CanvasContext {
  types: Map<string, NodeTypeSpec>;
  /** Problems per canvas node id. */
  nodeIssues: Map<string, ValidationIssue[]>;
  /** Ports edges use, per canvas node id: drawn even when the type lacks them. */
  usedPorts: Map<string, { inputs: Set<string>; outputs: Set<string> }>;
}

export const CanvasInfo = createContext<CanvasContext>({
  types: new Map(),
  nodeIssues: new Map(),
  usedPorts: new Map(),
});

const GLYPHS: Record<string, string> = {
  input: "IN",
  output: "OUT",
  noop: "—",
  template: "Tt",
  transform: "fx",
  code: "</>",
  condition: "?",
  switch: "SW",
  merge: "M",
  delay: "zZ",
  map: "[ ]",
  http_request: "GET",
  tool: "T",
  subworkflow: "WF",
  llm: "AI",
  agent: "AG",
  human_input: "HI",
};

export function glyphOf(type: string): string {
  return GLYPHS[type] ?? type.slice(0, 2).toUpperCase();
}

export function TypeBadge({ type, category }: { type: string; category: string | undefined }) {
  return (
    <span className={`ed-badge cat-${category ?? "unknown"}`} aria-hidden>
      {glyphOf(type)}
    </span>
  );
}

/** What a card says under its name about what the node calls: the tool, or the model (a
 * fallback chain as `a → b`) and an agent's tools. */
export function nodeDetail(def: { type: string; params?: Record<string, unknown> }): string | null {
  const params = def.params ?? {};
  const text = (value: unknown) => (Array.isArray(value) ? value.map(String).join(" → ") : typeof value === "string" ? value : "");
  if (def.type === "tool") return text(params.name) ? `tool: ${text(params.name)}` : null;
  if (def.type === "llm" || def.type === "agent") {
    const model = text(params.model);
    const tools = def.type === "agent" && Array.isArray(params.tools) && params.tools.length ? ` · tools: ${params.tools.map(String).join(", ")}` : "";
    return model || tools ? `model: ${model || "—"}${tools}` : null;
  }
  return null;
}

/** The unconditional port of a branching node (a condition's or a switch's `out`) is taken
 * whichever branch runs: the card names it so. */
const ALWAYS = "always";
function portLabel(port: string, spec: NodeTypeSpec | undefined): { text: string; title: string } {
  const branching = spec !== undefined && (spec.dynamic_ports !== null || spec.output_ports.some((p) => p !== "out" && p !== "error"));
  if (port === "out" && branching) {
    return { text: ALWAYS, title: "output port 'out': runs its targets after this node whichever branch is taken" };
  }
  if (port === "error") return { text: port, title: "output port 'error': taken when this node fails (on_error: fail_branch)" };
  return { text: port, title: `output port '${port}'` };
}

function withExtras(declared: string[], used: Set<string> | undefined): { port: string; known: boolean }[] {
  const ports = declared.map((port) => ({ port, known: true }));
  for (const port of used ?? []) if (!declared.includes(port)) ports.push({ port, known: false });
  return ports;
}

export const NodeCard = memo(function NodeCard({ id, data, selected }: NodeProps<FlowNode>) {
  const { types, nodeIssues, usedPorts } = useContext(CanvasInfo);
  const def = data.def;
  const spec = types.get(def.type);
  const declared = portsOf(def, spec);
  const used = usedPorts.get(id);
  const inputs = withExtras(declared.inputs, used?.inputs);
  const outputs = withExtras(declared.outputs, used?.outputs);
  const issues = nodeIssues.get(id) ?? [];
  const errors = issues.filter((issue) => issue.severity !== "warning");
  const warnings = issues.filter((issue) => issue.severity === "warning");
  const shown = issues.length > 0;
  const title = def.label || spec?.title || def.type;
  const detail = nodeDetail(def);

  // Handles come and go with switch cases, on_error and edges: React Flow must re-measure.
  const updateNodeInternals = useUpdateNodeInternals();
  const portKey = `${inputs.map((p) => p.port).join(",")}|${outputs.map((p) => p.port).join(",")}`;
  useEffect(() => updateNodeInternals(id), [id, portKey, updateNodeInternals]);

  const named = outputs.length > 1 || outputs.some((p) => p.port !== "out");
  const classes = ["ed-node"];
  if (selected) classes.push("selected");
  if (errors.length) classes.push("invalid");
  else if (warnings.length) classes.push("warned");
  if (!spec) classes.push("unknown-type");

  return (
    <div
      className={classes.join(" ")}
      data-testid={`editor-node-${def.id}`}
      data-invalid={errors.length ? "true" : undefined}
      data-warning={!errors.length && warnings.length ? "true" : undefined}
      title={issues.map((issue) => issue.message).join("\n") || spec?.description || undefined}
    >
      <div className="ed-node-head">
        <TypeBadge type={def.type} category={spec?.category} />
        <div className="ed-node-names">
          <div className="ed-node-title">{title}</div>
          <div className="ed-node-id">
            {def.id}
            {title !== def.type && <span className="ed-node-type"> · {def.type}</span>}
          </div>
          {detail && (
            <div className="ed-node-detail" data-testid="node-detail" title={detail}>
              {detail}
            </div>
          )}
        </div>
        {shown && (
          <span className={`ed-node-alert ${errors.length ? "error" : "warning"}`} aria-label={`${issues.length} problem${issues.length === 1 ? "" : "s"}`}>
            {issues.length > 1 ? issues.length : "!"}
          </span>
        )}
      </div>
      {named && (
        <div className="ed-node-ports">
          {outputs.map(({ port, known }) => {
            const label = portLabel(port, spec);
            return (
              <div
                key={port}
                className={`ed-port${known ? "" : " unknown"}${port === "error" ? " error-port" : ""}${label.text === ALWAYS ? " always-port" : ""}`}
                data-port={port}
                title={known ? label.title : `'${def.type}' has no output port '${port}'`}
              >
                {label.text}
                <Handle type="source" position={Position.Right} id={port} title={label.title} />
              </div>
            );
          })}
        </div>
      )}
      {!named && <Handle type="source" position={Position.Right} id="out" title="output" />}
      {inputs.map(({ port, known }, index) => (
        <Handle
          key={port}
          type="target"
          position={Position.Left}
          id={port}
          title={`input port '${port}'`}
          className={known ? undefined : "unknown"}
          style={inputs.length > 1 ? { top: `${((index + 1) * 100) / (inputs.length + 1)}%` } : undefined}
        />
      ))}
    </div>
  );
});
