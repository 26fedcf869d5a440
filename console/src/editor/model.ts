// The editor's document: React Flow nodes and edges (which keep their measured sizes and
// selection) plus the workflow-level fields, and its conversion to and from a definition.
//
// Canvas nodes and edges have internal ids (`n3`, `e7`) that never change: the node id of the
// definition lives in `data.def.id`, so renaming a node, or importing a definition with a
// duplicate id, never confuses React Flow, and edges follow a renamed node by construction.
import type { Edge, Node } from "@xyflow/react";
import type { Definition, EdgeDef, InputSpec, NodeDef, NodeTypeSpec } from "../lib/types";

export type FlowNode = Node<{ def: NodeDef }, "heddle">;
export type FlowEdge = Edge<{
  /** Fields of the edge definition other than its ends and ports, kept as imported. */
  extra: Record<string, unknown>;
  sourcePort?: string;
  targetPort?: string;
}>;

export interface InputRow {
  key: string;
  name: string;
  spec: InputSpec;
}

export interface OutputRow {
  key: string;
  name: string;
  value: unknown;
}

export interface Meta {
  name: string;
  description: string;
  inputs: InputRow[];
  outputs: OutputRow[];
  /** Whether the definition had an `outputs` object (kept even when empty). */
  hasOutputs: boolean;
  /** Top-level fields the editor does not edit (settings, triggers, metadata...). */
  extra: Record<string, unknown>;
}

export interface Doc {
  meta: Meta;
  nodes: FlowNode[];
  edges: FlowEdge[];
}

/** The port a node emits on, and the one it receives on, when an edge names none. */
export const DEFAULT_OUT = "out";
export const DEFAULT_IN = "in";
export const ERROR_PORT = "error";

const MISSING = "missing:";
let counter = 0;
export function uid(prefix: string): string {
  counter += 1;
  return `${prefix}${counter}`;
}

export const EMPTY_DOC: Doc = {
  meta: { name: "", description: "", inputs: [], outputs: [], hasOutputs: false, extra: {} },
  nodes: [],
  edges: [],
};

// ------------------------------------------------------------------ definition -> document

export function docFromDefinition(definition: Definition): Doc {
  const { name, description, inputs, nodes, edges, outputs, ...extra } = definition;
  const flowNodes: FlowNode[] = (nodes ?? []).map((raw, index) => {
    const { position, ...def } = raw;
    const at =
      position && typeof position.x === "number" && typeof position.y === "number"
        ? { x: position.x, y: position.y }
        : { x: index * 260, y: 0 };
    return {
      id: uid("n"),
      type: "heddle",
      position: at,
      data: { def: { ...def, params: def.params ?? {} } },
    };
  });
  const byId = new Map<string, string>();
  for (const node of flowNodes) if (!byId.has(node.data.def.id)) byId.set(node.data.def.id, node.id);
  const flowEdges: FlowEdge[] = (edges ?? []).map((raw) => {
    const { source, target, source_port, target_port, ...rest } = raw;
    return {
      id: uid("e"),
      source: byId.get(source) ?? MISSING + source,
      target: byId.get(target) ?? MISSING + target,
      data: {
        extra: rest,
        sourcePort: source_port ?? undefined,
        targetPort: target_port ?? undefined,
      },
    };
  });
  return {
    meta: {
      name: typeof name === "string" ? name : "",
      description: typeof description === "string" ? description : "",
      inputs: Object.entries(inputs ?? {}).map(([key, spec]) => ({
        key: uid("i"),
        name: key,
        spec: spec && typeof spec === "object" ? spec : {},
      })),
      outputs: Object.entries(outputs ?? {}).map(([key, value]) => ({
        key: uid("o"),
        name: key,
        value,
      })),
      hasOutputs: outputs !== undefined && outputs !== null,
      extra,
    },
    nodes: flowNodes,
    edges: flowEdges,
  };
}

/** A pasted or loaded document checked just enough to be drawn: the validator does the rest. */
export function definitionProblem(value: unknown): string | null {
  if (!value || typeof value !== "object" || Array.isArray(value)) {
    return "A workflow definition is an object with `name`, `nodes` and `edges`.";
  }
  const { nodes, edges } = value as { nodes?: unknown; edges?: unknown };
  if (!Array.isArray(nodes)) return "The definition has no `nodes` list.";
  for (const [index, node] of nodes.entries()) {
    const item = node as { id?: unknown; type?: unknown } | null;
    if (!item || typeof item !== "object" || typeof item.id !== "string" || typeof item.type !== "string") {
      return `nodes[${index}] needs a string \`id\` and \`type\`.`;
    }
  }
  if (edges !== undefined && !Array.isArray(edges)) return "`edges` must be a list.";
  for (const [index, edge] of ((edges as unknown[]) ?? []).entries()) {
    const item = edge as { source?: unknown; target?: unknown } | null;
    if (!item || typeof item !== "object" || typeof item.source !== "string" || typeof item.target !== "string") {
      return `edges[${index}] needs a string \`source\` and \`target\`.`;
    }
  }
  return null;
}

// ------------------------------------------------------------------ document -> definition

export function nodeDefId(doc: Doc, flowId: string): string {
  const node = doc.nodes.find((candidate) => candidate.id === flowId);
  return node ? node.data.def.id : flowId.startsWith(MISSING) ? flowId.slice(MISSING.length) : flowId;
}

export function toDefinition(doc: Doc, withPositions = true): Definition {
  const { meta } = doc;
  const ids = new Map(doc.nodes.map((node) => [node.id, node.data.def.id]));
  const end = (flowId: string) =>
    ids.get(flowId) ?? (flowId.startsWith(MISSING) ? flowId.slice(MISSING.length) : flowId);
  const definition: Definition = {
    ...meta.extra,
    name: meta.name,
    ...(meta.description ? { description: meta.description } : {}),
    ...(meta.inputs.length
      ? { inputs: Object.fromEntries(meta.inputs.map((row) => [row.name, row.spec])) }
      : {}),
    nodes: doc.nodes.map((node) => {
      const def: NodeDef = { ...node.data.def };
      if (withPositions) {
        def.position = { x: Math.round(node.position.x), y: Math.round(node.position.y) };
      }
      return def;
    }),
    edges: doc.edges.map((edge) => {
      const def: EdgeDef = { source: end(edge.source), target: end(edge.target) };
      if (edge.data?.sourcePort !== undefined) def.source_port = edge.data.sourcePort;
      if (edge.data?.targetPort !== undefined) def.target_port = edge.data.targetPort;
      return { ...def, ...edge.data?.extra };
    }),
  };
  if (meta.outputs.length || meta.hasOutputs) {
    definition.outputs = Object.fromEntries(meta.outputs.map((row) => [row.name, row.value]));
  }
  return definition;
}

// ------------------------------------------------------------------ node types and ports

export interface Ports {
  inputs: string[];
  outputs: string[];
}

/** The handles a node has: its type's ports (switch: one per case), `error` with
 * `on_error: fail_branch`. Ports that edges name but the type lacks are added by the card. */
export function portsOf(def: NodeDef, spec: NodeTypeSpec | undefined): Ports {
  if (!spec) return { inputs: [DEFAULT_IN], outputs: [DEFAULT_OUT] };
  const inputs = [...spec.input_ports];
  for (const port of spec.list_input_ports ?? []) if (!inputs.includes(port)) inputs.push(port);
  let outputs = [...spec.output_ports];
  if (spec.dynamic_ports === "switch_cases") {
    const cases = Array.isArray(def.params?.cases) ? (def.params.cases as unknown[]) : [];
    outputs = [...cases.map(String), "default", DEFAULT_OUT];
  }
  if (def.on_error === "fail_branch" && !outputs.includes(ERROR_PORT)) outputs.push(ERROR_PORT);
  return { inputs, outputs: [...new Set(outputs)] };
}

export function sourceHandleOf(edge: FlowEdge): string {
  return edge.data?.sourcePort ?? DEFAULT_OUT;
}

export function targetHandleOf(edge: FlowEdge): string {
  return edge.data?.targetPort ?? DEFAULT_IN;
}

// ------------------------------------------------------------------ node ids

const NODE_ID = /^[A-Za-z_][A-Za-z0-9_]{0,63}$/;
const RESERVED = new Set(
  (
    "inputs system secrets item index env loop range dict namespace cycler joiner lipsum " +
    "caller varargs kwargs self super true false none True False None and or not in is if else elif"
  ).split(" "),
);

/** Why a string cannot be a node id (services/workflow/definition.py), or null. */
export function nodeIdProblem(value: string, taken: Iterable<string>): string | null {
  if (!NODE_ID.test(value)) {
    return "Letters, digits and _ only, not starting with a digit (at most 64).";
  }
  if (RESERVED.has(value)) return `'${value}' is a reserved name.`;
  for (const id of taken) if (id === value) return `Another node is called '${value}'.`;
  return null;
}

/** `<type>_<n>` with the smallest n not taken. */
export function freshNodeId(type: string, taken: Iterable<string>): string {
  const used = new Set(taken);
  const base = NODE_ID.test(`${type}_1`) && !RESERVED.has(type) ? type : "node";
  for (let n = 1; ; n += 1) if (!used.has(`${base}_${n}`)) return `${base}_${n}`;
}

// ------------------------------------------------------------------ renaming references

const BARE_EXPRESSION_PARAMS: Record<string, string[]> = {
  condition: ["expression"],
  switch: ["expression"],
  transform: ["expression"],
};
const LITERAL_PARAMS: Record<string, string[]> = { code: ["source"] };

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

/** Old node id -> new node id, applied at once (so `a -> b, b -> c` never gives `c` for `a`). */
export type Renames = ReadonlyMap<string, string>;

/** Rewrites `old.x` / `old[...]` references to their new ids in an expression. */
function renameInExpression(text: string, renames: Renames): string {
  if (!renames.size) return text;
  const names = [...renames.keys()].map(escapeRegExp).join("|");
  const pattern = new RegExp(`(?<![\\w.])(?:${names})(?=\\s*[.[])`, "g");
  return text.replace(pattern, (old) => renames.get(old) ?? old);
}

/** Rewrites references inside `{{ }}` and `{% %}` of a template; a string without template
 * syntax is an expression where `bare` says so. */
function renameInString(text: string, renames: Renames, bare: boolean): string {
  if (!text.includes("{{") && !text.includes("{%")) {
    return bare ? renameInExpression(text, renames) : text;
  }
  return text.replace(/(\{\{|\{%)([\s\S]*?)(\}\}|%\})/g, (_, open: string, body: string, close: string) =>
    open + renameInExpression(body, renames) + close,
  );
}

function renameInValue(value: unknown, renames: Renames, bare: boolean): unknown {
  if (typeof value === "string") return renameInString(value, renames, bare);
  if (Array.isArray(value)) return value.map((item) => renameInValue(item, renames, false));
  if (value && typeof value === "object") {
    return Object.fromEntries(
      Object.entries(value).map(([key, item]) => [key, renameInValue(item, renames, false)]),
    );
  }
  return value;
}

/** A node definition with its references to renamed nodes rewritten (params, `when`,
 * `default_output`); its own id is left as it is. */
function renameReferences(def: NodeDef, renames: Renames): NodeDef {
  const bare = BARE_EXPRESSION_PARAMS[def.type] ?? [];
  const literal = LITERAL_PARAMS[def.type] ?? [];
  const renamed: NodeDef = {
    ...def,
    params: Object.fromEntries(
      Object.entries(def.params ?? {}).map(([key, value]) => [
        key,
        literal.includes(key) ? value : renameInValue(value, renames, bare.includes(key)),
      ]),
    ),
  };
  if (typeof def.when === "string") renamed.when = renameInString(def.when, renames, true);
  if (def.default_output !== undefined) renamed.default_output = renameInValue(def.default_output, renames, false);
  return renamed;
}

/** The node renamed, and every template that referenced it rewritten. */
export function renameNode(doc: Doc, flowId: string, renamed: string): Doc {
  const target = doc.nodes.find((node) => node.id === flowId);
  if (!target) return doc;
  const renames: Renames = new Map([[target.data.def.id, renamed]]);
  const nodes = doc.nodes.map((node) => {
    const def = renameReferences(node.data.def, renames);
    if (node.id === flowId) def.id = renamed;
    return { ...node, data: { def } };
  });
  const outputs = doc.meta.outputs.map((row) => ({
    ...row,
    value: renameInValue(row.value, renames, false),
  }));
  return { ...doc, nodes, meta: { ...doc.meta, outputs } };
}

// ------------------------------------------------------------------ copy and paste

/** Nodes copied with the edges between them, detached from the document they came from. */
export interface Clip {
  nodes: FlowNode[];
  edges: FlowEdge[];
}

/** Where a paste lands relative to what was copied. */
export const PASTE_OFFSET = { x: 40, y: 40 };

/** The selected nodes and the edges between them, or null when no node is selected. */
export function copySelection(doc: Doc): Clip | null {
  const nodes = doc.nodes.filter((node) => node.selected);
  if (!nodes.length) return null;
  const keys = new Set(nodes.map((node) => node.id));
  return {
    nodes: nodes.map((node) => ({
      id: node.id,
      type: "heddle",
      position: { ...node.position },
      data: { def: structuredClone(node.data.def) },
    })),
    edges: doc.edges
      .filter((edge) => keys.has(edge.source) && keys.has(edge.target))
      .map((edge) => ({ id: edge.id, source: edge.source, target: edge.target, data: structuredClone(edge.data) })),
  };
}

/** The clip as a definition fragment (what goes to the system clipboard). */
export function clipDefinition(clip: Clip): Pick<Definition, "nodes" | "edges"> {
  const { nodes, edges } = toDefinition({ ...EMPTY_DOC, nodes: clip.nodes, edges: clip.edges });
  return { nodes, edges };
}

/** The clip moved by `offset` (the next paste of the same clip lands beside the last one). */
export function shiftClip(clip: Clip, offset = PASTE_OFFSET): Clip {
  return {
    ...clip,
    nodes: clip.nodes.map((node) => ({ ...node, position: { x: node.position.x + offset.x, y: node.position.y + offset.y } })),
  };
}

/** The clip added to the document, moved by `offset`, as the new selection: fresh node ids
 * (`<type>_<n>`), edges between the new nodes, and references among the pasted nodes
 * rewritten to the new ids (references to nodes not copied are left alone). */
export function pasteClip(doc: Doc, clip: Clip, offset = PASTE_OFFSET): Doc {
  const taken = doc.nodes.map((node) => node.data.def.id);
  const renames = new Map<string, string>();
  const keys = new Map<string, string>();
  const fresh = clip.nodes.map((node) => {
    const id = freshNodeId(node.data.def.type, taken);
    taken.push(id);
    if (!renames.has(node.data.def.id)) renames.set(node.data.def.id, id);
    const key = uid("n");
    keys.set(node.id, key);
    return { node, id, key };
  });
  const pasted: FlowNode[] = fresh.map(({ node, id, key }) => ({
    id: key,
    type: "heddle",
    position: { x: node.position.x + offset.x, y: node.position.y + offset.y },
    selected: true,
    data: { def: { ...renameReferences(structuredClone(node.data.def), renames), id } },
  }));
  const edges: FlowEdge[] = clip.edges.flatMap((edge) => {
    const source = keys.get(edge.source);
    const target = keys.get(edge.target);
    return source && target ? [{ id: uid("e"), source, target, data: structuredClone(edge.data) }] : [];
  });
  return {
    ...doc,
    nodes: [...doc.nodes.map((node) => (node.selected ? { ...node, selected: false } : node)), ...pasted],
    edges: [...doc.edges.map((edge) => (edge.selected ? { ...edge, selected: false } : edge)), ...edges],
  };
}
