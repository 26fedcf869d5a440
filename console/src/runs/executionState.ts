// The live state of an execution: the last detail read from the API (a snapshot, which
// reflects every event up to its `last_seq`) with the stream's later events folded on top.
// A newer snapshot simply replaces the old one; events it already covers are then skipped.
import type { ExecutionStatus, JsonSchema, NodeStatus } from "../lib/types";

export interface ErrorInfo {
  type: string;
  message: string;
  retryable?: boolean;
  details?: unknown;
}

export interface AttemptRecord {
  attempt: number;
  status: string;
  started_at?: string | null;
  finished_at?: string | null;
  error?: ErrorInfo | null;
}

export interface Waiting {
  prompt?: string;
  schema?: JsonSchema;
  timeout_s?: number | null;
  [key: string]: unknown;
}

export interface NodeRunDetail {
  node_id: string;
  type: string;
  status: NodeStatus;
  attempts: number;
  output?: unknown;
  error?: ErrorInfo | null;
  started_at?: string | null;
  finished_at?: string | null;
  duration_ms?: number | null;
  attempt_history: AttemptRecord[];
  waiting?: Waiting | null;
  inputs?: unknown;
  /** The last durable checkpoint: an agent's `{journal: [...]}`, a loop's iteration. */
  checkpoint?: unknown;
}

export interface ExecutionDetail {
  id: string;
  workflow_id: string;
  workflow_version: number;
  status: ExecutionStatus;
  inputs?: unknown;
  outputs?: unknown;
  error?: (ErrorInfo & { node_id?: string }) | null;
  created_at?: string | null;
  started_at?: string | null;
  finished_at?: string | null;
  duration_ms?: number | null;
  trigger?: string;
  parent_execution_id?: string | null;
  retry_of?: string | null;
  forked_from?: { execution_id: string; node_id: string } | null;
  idempotency_key?: string | null;
  trace_id?: string | null;
  last_seq: number;
  nodes: NodeRunDetail[];
}

/** One event as the SSE stream sends it. */
export interface StreamEvent {
  execution_id: string;
  seq: number;
  type: string;
  node_id: string | null;
  ts: string | null;
  data: Record<string, unknown> | null;
  trace_id?: string | null;
}

export interface NodeStream {
  attempt: number;
  text: string;
}

export interface LiveState {
  execution: ExecutionDetail;
  nodes: Record<string, NodeRunDetail>;
  /** Streamed LLM text per node (the latest attempt's). */
  streams: Record<string, NodeStream>;
  /** Every `agent.step` event per node, in seq order (snapshot or not: see AgentSteps). */
  steps: Record<string, StreamEvent[]>;
  /** When each node last began to wait (its node.waiting event's time). */
  waitingSince: Record<string, string>;
}

export const FINAL_EXECUTION: ReadonlySet<string> = new Set(["succeeded", "failed", "cancelled"]);
export const FINAL_NODE: ReadonlySet<string> = new Set(["succeeded", "failed", "skipped", "cached", "cancelled"]);
export const FINAL_EVENTS: ReadonlySet<string> = new Set([
  "execution.completed",
  "execution.failed",
  "execution.cancelled",
]);

function asError(value: unknown): ErrorInfo | null {
  if (!value || typeof value !== "object") return null;
  const record = value as Record<string, unknown>;
  return {
    type: String(record.type ?? "Error"),
    message: String(record.message ?? ""),
    retryable: Boolean(record.retryable),
    details: record.details,
  };
}

function blankNode(nodeId: string, type = ""): NodeRunDetail {
  return { node_id: nodeId, type, status: "pending", attempts: 0, attempt_history: [] };
}

function withAttempt(node: NodeRunDetail, attempt: number, patch: Partial<AttemptRecord>): AttemptRecord[] {
  const history = node.attempt_history.slice();
  const at = history.findIndex((entry) => entry.attempt === attempt);
  if (at >= 0) history[at] = { ...history[at], ...patch };
  else history.push({ attempt, status: "running", ...patch });
  return history;
}

function durationMs(from: string | null | undefined, to: string | null | undefined): number | null {
  if (!from || !to) return null;
  const ms = Date.parse(to) - Date.parse(from);
  return Number.isFinite(ms) ? ms : null;
}

/** The state after the snapshot and the events that follow it (events in seq order). */
export function foldEvents(snapshot: ExecutionDetail, events: readonly StreamEvent[]): LiveState {
  let execution: ExecutionDetail = { ...snapshot };
  const nodes: Record<string, NodeRunDetail> = {};
  for (const node of snapshot.nodes) nodes[node.node_id] = node;
  const streams: Record<string, NodeStream> = {};
  const steps: Record<string, StreamEvent[]> = {};
  const waitingSince: Record<string, string> = {};

  for (const event of events) {
    if (event.node_id && event.type === "agent.step") (steps[event.node_id] ??= []).push(event);
    if (event.node_id && event.type === "node.waiting" && event.ts) waitingSince[event.node_id] = event.ts;
    const data = event.data ?? {};
    const attempt = typeof data.attempt === "number" ? data.attempt : undefined;
    // Streamed text is not part of the detail: every chunk counts, snapshot or not.
    if (event.type === "node.text_chunk" && event.node_id) {
      const previous = streams[event.node_id];
      const delta = String(data.delta ?? "");
      streams[event.node_id] =
        previous && previous.attempt === (attempt ?? previous.attempt)
          ? { attempt: previous.attempt, text: previous.text + delta }
          : { attempt: attempt ?? 1, text: delta };
      continue;
    }
    if (event.seq <= snapshot.last_seq) continue;

    const nodeId = event.node_id;
    const node = nodeId ? (nodes[nodeId] ?? blankNode(nodeId)) : null;
    const set = (patch: Partial<NodeRunDetail>) => {
      if (node && nodeId) nodes[nodeId] = { ...node, ...patch };
    };
    switch (event.type) {
      case "execution.started":
        execution = { ...execution, status: "running", started_at: execution.started_at ?? event.ts };
        break;
      case "execution.paused":
        execution = { ...execution, status: "paused" };
        break;
      case "execution.resumed":
        execution = { ...execution, status: "running" };
        break;
      case "execution.completed":
      case "execution.failed":
      case "execution.cancelled": {
        const status: ExecutionStatus =
          event.type === "execution.completed" ? "succeeded" : event.type === "execution.failed" ? "failed" : "cancelled";
        execution = {
          ...execution,
          status,
          finished_at: event.ts,
          duration_ms: durationMs(execution.started_at, event.ts),
          outputs: status === "succeeded" ? data.outputs : execution.outputs,
          error: status === "failed" ? asError(data.error) : execution.error,
        };
        // The service closes what still runs or waits without an event per node.
        for (const [id, run] of Object.entries(nodes)) {
          if (!FINAL_NODE.has(run.status)) nodes[id] = { ...run, status: "cancelled", finished_at: event.ts };
        }
        break;
      }
      case "node.started":
        set({
          status: "running",
          type: typeof data.type === "string" ? data.type : node?.type ?? "",
          attempts: attempt ?? (node?.attempts ?? 0) + 1,
          started_at: node?.started_at ?? event.ts,
          finished_at: null,
          waiting: null,
          attempt_history: node ? withAttempt(node, attempt ?? node.attempts + 1, { status: "running", started_at: event.ts }) : [],
        });
        break;
      case "node.completed":
      case "node.failed":
      case "node.skipped": {
        const status = (typeof data.status === "string" ? data.status : event.type.slice(5)) as NodeStatus;
        const error = asError(data.error);
        const patch: Partial<NodeRunDetail> = {
          status: status === ("completed" as NodeStatus) ? "succeeded" : status,
          finished_at: event.ts,
          waiting: null,
          error: event.type === "node.completed" ? null : (error ?? node?.error ?? null),
        };
        if ("output" in data) patch.output = data.output;
        if (typeof data.duration_ms === "number") patch.duration_ms = data.duration_ms;
        if (node && attempt !== undefined && event.type !== "node.skipped") {
          patch.attempt_history = withAttempt(node, attempt, { status: patch.status, finished_at: event.ts, error });
        }
        set(patch);
        break;
      }
      case "node.retrying": {
        const error = asError(data.error);
        set({
          status: "retrying",
          error,
          attempt_history:
            node && attempt !== undefined
              ? withAttempt(node, attempt, { status: "failed", finished_at: event.ts, error })
              : node?.attempt_history ?? [],
        });
        break;
      }
      case "node.waiting": {
        const { attempt: _attempt, ...waiting } = data;
        set({ status: "waiting", waiting: waiting as Waiting });
        break;
      }
      default:
        break;
    }
  }
  const last = events.length ? events[events.length - 1].seq : 0;
  if (last > execution.last_seq) execution = { ...execution, last_seq: last };
  return { execution, nodes, streams, steps, waitingSince };
}

/** Whether the applied events include the execution's end. */
export function hasFinalEvent(events: readonly StreamEvent[]): boolean {
  return events.some((event) => FINAL_EVENTS.has(event.type));
}
