// One execution, live: the detail is read once, then the SSE stream's events are applied in
// seq order, each exactly once (resuming with ?after=<last applied seq> after a disconnect);
// the detail is re-read after node and execution milestones to fill in what events do not
// carry (node inputs, attempt history).
import { useCallback, useEffect, useMemo, useRef, useState } from "react";
import { ApiError, api } from "../lib/api";
import { navigate } from "../lib/router";
import type { Definition, Workflow } from "../lib/types";
import { ExecutionGraph } from "./ExecutionGraph";
import {
  FINAL_EVENTS,
  FINAL_EXECUTION,
  foldEvents,
  type ExecutionDetail,
  type StreamEvent,
} from "./executionState";
import { followEvents, type StreamState } from "./eventStream";
import { elapsedMs, formatDuration, formatTime } from "./format";
import { ForkedFrom } from "./ForkDialog";
import { ExecutionSummary, NodeDetail, StatusBadge } from "./NodeDetail";
import { EventsPanel, LogsPanel } from "./Panels";
import "./runs.css";

declare global {
  interface Window {
    /** Sequence numbers of the events applied by this page, in order (for tests). */
    __heddleEvents?: number[];
    /** How many times this page's event stream was reopened after ending early. */
    __heddleReconnects?: number;
  }
}

/** Events after which the detail is worth reading again. */
const MILESTONES = new Set([
  "node.completed",
  "node.failed",
  "node.retrying",
  "node.skipped",
  "node.waiting",
  "node.iteration",
  ...FINAL_EVENTS,
  "execution.paused",
  "execution.resumed",
]);
const REFRESH_DELAY_MS = 250;
const LATE_LOGS_MS = 1500;

type Action = "cancel" | "pause" | "resume" | "retry";

export function ExecutionView({ executionId, jaegerUrl }: { executionId: string; jaegerUrl: string | null }) {
  const [snapshot, setSnapshot] = useState<ExecutionDetail | null>(null);
  const [definition, setDefinition] = useState<Definition | null>(null);
  const [workflowName, setWorkflowName] = useState<string | null>(null);
  const [events, setEvents] = useState<StreamEvent[]>([]);
  const [loadError, setLoadError] = useState<string | null>(null);
  const [stream, setStream] = useState<{ state: StreamState; detail?: string; connected: boolean }>({
    state: "live",
    connected: false,
  });
  const [selected, setSelected] = useState<string | null>(null);
  const [busy, setBusy] = useState<Action | null>(null);
  const [actionError, setActionError] = useState<string | null>(null);
  const [now, setNow] = useState(() => Date.now());

  const lastSeq = useRef(0);
  const finished = useRef(false);
  const mounted = useRef(true);
  const refreshTimer = useRef<ReturnType<typeof setTimeout> | null>(null);
  const autoSelected = useRef(new Set<string>());

  /** Keep the newest detail: one older than what we hold would roll state back. */
  const acceptDetail = useCallback((next: ExecutionDetail) => {
    setSnapshot((previous) => (!previous || next.last_seq >= previous.last_seq ? next : previous));
  }, []);

  const scheduleRefresh = useCallback(() => {
    if (refreshTimer.current) return;
    refreshTimer.current = setTimeout(async () => {
      refreshTimer.current = null;
      try {
        const detail = await api<ExecutionDetail>(`/api/v1/executions/${encodeURIComponent(executionId)}`);
        if (mounted.current) acceptDetail(detail);
      } catch {
        // The stream keeps the view current; the next milestone tries again.
      }
    }, REFRESH_DELAY_MS);
  }, [executionId, acceptDetail]);

  useEffect(() => {
    mounted.current = true;
    window.__heddleEvents = [];
    window.__heddleReconnects = 0;
    lastSeq.current = 0;
    finished.current = false;
    let stop = () => {};
    (async () => {
      let detail: ExecutionDetail;
      try {
        detail = await api<ExecutionDetail>(`/api/v1/executions/${encodeURIComponent(executionId)}`);
      } catch (error) {
        if (mounted.current) {
          setLoadError(error instanceof ApiError && error.status === 404 ? "No such execution." : String((error as Error).message));
        }
        return;
      }
      if (!mounted.current) return;
      acceptDetail(detail);
      api<Workflow>(
        `/api/v1/workflows/${encodeURIComponent(detail.workflow_id)}?version=${detail.workflow_version}`,
      )
        .then((workflow) => {
          if (!mounted.current) return;
          setDefinition(workflow.definition);
          setWorkflowName(workflow.name);
        })
        .catch(() => {
          // The workflow is gone: draw the nodes the execution has, without edges.
          if (!mounted.current) return;
          setDefinition({
            name: detail.workflow_id,
            nodes: detail.nodes.map((node) => ({ id: node.node_id, type: node.type })),
            edges: [],
          });
        });
      stop = followEvents({
        executionId,
        lastSeq: () => lastSeq.current,
        finished: () => finished.current,
        onEvents: (batch) => {
          const fresh: StreamEvent[] = [];
          let milestone = false;
          for (const event of batch) {
            if (event.seq <= lastSeq.current) continue; // a replayed duplicate
            lastSeq.current = event.seq;
            window.__heddleEvents?.push(event.seq);
            if (FINAL_EVENTS.has(event.type)) finished.current = true;
            if (MILESTONES.has(event.type)) milestone = true;
            fresh.push(event);
          }
          if (fresh.length === 0) return;
          setEvents((previous) => previous.concat(fresh));
          if (milestone) scheduleRefresh();
        },
        onState: (state, detail) => setStream({ state, detail, connected: true }),
        onReconnect: () => {
          window.__heddleReconnects = (window.__heddleReconnects ?? 0) + 1;
        },
      });
    })();
    return () => {
      mounted.current = false;
      stop();
      if (refreshTimer.current) clearTimeout(refreshTimer.current);
      refreshTimer.current = null;
    };
  }, [executionId, acceptDetail, scheduleRefresh]);

  const live = useMemo(() => (snapshot ? foldEvents(snapshot, events) : null), [snapshot, events]);
  const status = live?.execution.status;
  const final = status !== undefined && FINAL_EXECUTION.has(status);

  const loaded = live !== null;
  // Durations of what still runs tick once a second.
  useEffect(() => {
    if (final || !loaded) return;
    const timer = setInterval(() => setNow(Date.now()), 1000);
    return () => clearInterval(timer);
  }, [final, loaded]);

  // Logs grow with node milestones, not with every streamed token; the log service may
  // store the last records a moment after the execution ends: one more look then.
  const [lateLogs, setLateLogs] = useState(0);
  useEffect(() => {
    if (!final) return;
    const timer = setTimeout(() => setLateLogs(1), LATE_LOGS_MS);
    return () => clearTimeout(timer);
  }, [final]);
  const logsKey = useMemo(
    () => events.filter((event) => event.type !== "node.text_chunk").length + lateLogs,
    [events, lateLogs],
  );

  // A node that waits for input is worth showing without a click (once per wait).
  useEffect(() => {
    if (!live || !definition) return;
    const waiting = definition.nodes.find((node) => live.nodes[node.id]?.status === "waiting");
    if (!waiting) return;
    const key = `${waiting.id}/${live.nodes[waiting.id]?.attempts ?? 0}`;
    if (autoSelected.current.has(key)) return;
    autoSelected.current.add(key);
    setSelected((current) => (current && live.nodes[current]?.status === "waiting" ? current : waiting.id));
  }, [live, definition]);

  const act = async (action: Action) => {
    setBusy(action);
    setActionError(null);
    try {
      if (action === "retry") {
        const started = await api<{ execution_id: string }>(
          `/api/v1/executions/${encodeURIComponent(executionId)}/retry`,
          { method: "POST" },
        );
        navigate(`/executions/${started.execution_id}`);
        return;
      }
      const detail = await api<ExecutionDetail>(`/api/v1/executions/${encodeURIComponent(executionId)}/${action}`, {
        method: "POST",
      });
      if (mounted.current) acceptDetail(detail);
    } catch (error) {
      if (mounted.current) setActionError(`Could not ${action}: ${(error as Error).message}`);
    } finally {
      if (mounted.current) setBusy(null);
    }
  };

  if (loadError) {
    return (
      <div className="ev-message">
        <p className="error" data-testid="execution-load-error">
          Execution {executionId}: {loadError}
        </p>
        <a href="#/executions">Back to executions</a>
      </div>
    );
  }
  if (!live || !snapshot) return <div className="ev-message ev-muted">Loading execution…</div>;

  const execution = live.execution;
  const nodeIds = definition ? definition.nodes.map((node) => node.id) : execution.nodes.map((node) => node.node_id);
  const selectedDef = definition?.nodes.find((node) => node.id === selected);
  const duration = execution.duration_ms ?? elapsedMs(execution.started_at, execution.finished_at, now);
  const canCancel = status === "pending" || status === "running" || status === "paused";
  const traceHref = jaegerUrl && execution.trace_id ? `${jaegerUrl.replace(/\/$/, "")}/trace/${execution.trace_id}` : null;
  const streamLabel =
    stream.state === "reconnecting"
      ? "reconnecting…"
      : stream.state === "closed"
        ? "stream closed"
        : stream.connected
          ? "live"
          : "connecting…";

  return (
    <div className="ev-page">
      <header className="ev-header">
        <div className="ev-title">
          <div className="ev-crumbs">
            <a href="#/executions">Executions</a>
            <span className="ev-muted"> / </span>
            <span className="ev-mono ev-muted" title={execution.id}>
              {execution.id}
            </span>
          </div>
          <div className="ev-name">
            <a href={`#/workflows/${execution.workflow_id}`} data-testid="execution-workflow">
              {workflowName ?? execution.workflow_id}
            </a>
            <span className="ev-version">v{execution.workflow_version}</span>
            <StatusBadge status={execution.status} testId="execution-status" />
            <ForkedFrom from={execution.forked_from} />
          </div>
        </div>
        <dl className="ev-timings">
          <div>
            <dt>started</dt>
            <dd>{formatTime(execution.started_at ?? execution.created_at)}</dd>
          </div>
          <div>
            <dt>{final ? "took" : "running for"}</dt>
            <dd data-testid="execution-duration">{formatDuration(duration)}</dd>
          </div>
          <div>
            <dt>events</dt>
            <dd>{events.length}</dd>
          </div>
        </dl>
        <div className="ev-header-side">
          <span
            className={`ev-stream-state ${stream.state}`}
            data-testid="stream-state"
            data-state={stream.state}
            title={stream.detail ?? "Server-Sent Events"}
          >
            <span className="ev-stream-dot" />
            {streamLabel}
          </span>
          {traceHref && (
            <a className="ev-trace" data-testid="trace-link" href={traceHref} target="_blank" rel="noreferrer">
              Trace ↗
            </a>
          )}
          <div className="ev-actions">
            <button
              data-testid="pause-execution"
              disabled={status !== "running" || busy !== null}
              onClick={() => act("pause")}
            >
              Pause
            </button>
            <button
              data-testid="resume-execution"
              disabled={status !== "paused" || busy !== null}
              onClick={() => act("resume")}
            >
              Resume
            </button>
            <button
              className="danger"
              data-testid="cancel-execution"
              disabled={!canCancel || busy !== null}
              onClick={() => act("cancel")}
            >
              Cancel
            </button>
            <button
              className="primary"
              data-testid="retry-execution"
              disabled={!(status === "failed" || status === "cancelled") || busy !== null}
              title="Run again, reusing the outputs of the nodes that succeeded"
              onClick={() => act("retry")}
            >
              Retry
            </button>
          </div>
        </div>
      </header>
      {(actionError || execution.error) && (
        <div className="ev-banner">
          {actionError && (
            <span className="error" data-testid="action-error">
              {actionError}
            </span>
          )}
          {!actionError && execution.error && (
            <span className="error">
              <strong>{execution.error.type}</strong>: {execution.error.message}
            </span>
          )}
        </div>
      )}
      <div className="ev-main">
        {definition ? (
          <ExecutionGraph
            definition={definition}
            runs={live.nodes}
            streams={live.streams}
            selected={selected}
            onSelect={setSelected}
          />
        ) : (
          <div className="ev-graph ev-message ev-muted">Loading graph…</div>
        )}
        <aside className="ev-side">
          {selected ? (
            <NodeDetail
              key={selected}
              executionId={executionId}
              nodeId={selected}
              definition={selectedDef}
              run={live.nodes[selected]}
              stream={live.streams[selected]}
              now={now}
              onClose={() => setSelected(null)}
              onSubmitted={acceptDetail}
              stepEvents={live.steps[selected]}
              waitingSince={live.waitingSince[selected]}
            />
          ) : (
            <ExecutionSummary execution={execution} />
          )}
        </aside>
      </div>
      <div className="ev-bottom">
        <LogsPanel executionId={executionId} nodeIds={nodeIds} refreshKey={logsKey} selectedNode={selected} />
        <EventsPanel events={events} />
      </div>
    </div>
  );
}
