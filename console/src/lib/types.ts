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
