// Shapes of the HTTP API (ARCHITECTURE.md). Only what the console reads is typed.

export interface NodeDef {
  id: string;
  type: string;
  name?: string;
  params?: Record<string, unknown>;
  when?: string;
  retry?: Record<string, unknown>;
  timeout_s?: number;
  on_error?: "fail" | "continue" | "skip" | "fail_branch";
  default_output?: unknown;
  cache?: Record<string, unknown> | boolean;
  /** Editor-only layout, kept in the definition so that a saved graph reopens as it was. */
  position?: { x: number; y: number };
  /** Display name on the canvas (the id stays what templates reference). */
  label?: string;
  description?: string;
  [key: string]: unknown;
}

export interface EdgeDef {
  source: string;
  target: string;
  source_port?: string;
  target_port?: string;
}

export interface InputSpec {
  type?: string;
  required?: boolean;
  default?: unknown;
  description?: string;
}

export interface Definition {
  name: string;
  description?: string;
  inputs?: Record<string, InputSpec>;
  nodes: NodeDef[];
  edges: EdgeDef[];
  outputs?: Record<string, unknown>;
  [key: string]: unknown;
}

export interface NodeType {
  type: string;
  version?: number | string;
  description?: string;
  category?: string;
  params_schema?: JsonSchema;
  input_schema?: JsonSchema;
  output_schema?: JsonSchema;
  ports?: { inputs?: string[]; outputs?: string[] };
  [key: string]: unknown;
}

/** A node type as GET /api/v1/node-types lists it (libs/common/node_types.py NodeTypeSpec). */
export interface NodeTypeSpec {
  type: string;
  version: number;
  title: string;
  description: string;
  /** Palette group: core, flow, ai, integration, human. */
  category: string;
  params_schema: JsonSchema;
  output_schema: JsonSchema;
  input_ports: string[];
  /** Input ports that aggregate every incoming edge into a list. */
  list_input_ports: string[];
  /** Static output handles; `out` is the one an edge without `source_port` leaves. */
  output_ports: string[];
  /** `switch_cases`: one output port per entry of `params.cases`, plus `default`. */
  dynamic_ports: "switch_cases" | null;
}

export type JsonSchema = {
  type?: string | string[];
  properties?: Record<string, JsonSchema>;
  required?: string[];
  enum?: unknown[];
  default?: unknown;
  description?: string;
  items?: JsonSchema;
  [key: string]: unknown;
};

export interface Workflow {
  id: string;
  name: string;
  version: number;
  definition: Definition;
  description?: string;
  created_at?: string;
  updated_at?: string;
  [key: string]: unknown;
}

export interface ValidationProblem {
  code?: string;
  message: string;
  node_id?: string | null;
  edge?: EdgeDef | string | null;
  field?: string | null;
  [key: string]: unknown;
}

/** One problem of POST /api/v1/workflows/validate, located by node id, edge index, field. */
export interface ValidationIssue {
  code: string;
  message: string;
  node_id: string | null;
  /** Index into the definition's `edges`. */
  edge: number | null;
  /** Path such as `nodes[2].params.url`. */
  field: string | null;
  severity: "error" | "warning";
}

export interface ValidationReport {
  valid: boolean;
  issues: ValidationIssue[];
}

export type ExecutionStatus =
  | "pending"
  | "running"
  | "paused"
  | "succeeded"
  | "failed"
  | "cancelled";

export type NodeStatus =
  | "pending"
  | "queued"
  | "running"
  | "retrying"
  | "succeeded"
  | "failed"
  | "skipped"
  | "cached"
  | "cancelled"
  | "waiting";

export interface NodeRun {
  node_id: string;
  status: NodeStatus;
  attempts?: unknown;
  output?: unknown;
  error?: unknown;
  started_at?: string | null;
  finished_at?: string | null;
  [key: string]: unknown;
}

export interface Execution {
  id: string;
  workflow_id: string;
  workflow_version?: number;
  status: ExecutionStatus;
  inputs?: Record<string, unknown>;
  outputs?: unknown;
  error?: unknown;
  trace_id?: string | null;
  created_at?: string;
  started_at?: string | null;
  finished_at?: string | null;
  duration_ms?: number | null;
  /** What started it: api, schedule, webhook:<name>, retry, subworkflow. */
  trigger?: string;
  nodes?: NodeRun[];
  [key: string]: unknown;
}

export interface ExecutionEvent {
  seq: number;
  type: string;
  execution_id: string;
  node_id?: string | null;
  timestamp?: string;
  trace_id?: string;
  data?: Record<string, unknown>;
  [key: string]: unknown;
}

/** A cron schedule (`/api/v1/schedules`). */
export interface Schedule {
  id: string;
  name: string;
  workflow_id: string;
  cron: string;
  timezone: string;
  inputs?: Record<string, unknown> | null;
  enabled: boolean;
  misfire_policy: "skip" | "run_once" | "run_all";
  misfire_limit: number;
  start_at?: string | null;
  end_at?: string | null;
  next_fire_at?: string | null;
  last_fire_at?: string | null;
  created_at?: string | null;
  updated_at?: string | null;
}
