// `#/executions?status=…&workflow_id=…&page=…`: executions, newest first. The filters live in
// the hash so that a filtered list is a link; the list refreshes itself while any listed
// execution can still change.
import { useCallback, useEffect, useMemo, useRef, useState } from "react";
import { api, type Page } from "../lib/api";
import { navigate } from "../lib/router";
import type { Execution } from "../lib/types";
import {
  EXECUTION_STATUSES,
  EmptyState,
  ErrorNote,
  Pager,
  RelativeTime,
  StatusBadge,
  errorMessage,
  formatDuration,
  isFinal,
  navigateWithQuery,
  pageParam,
  shortId,
  useAllWorkflows,
  useHashQuery,
} from "./common";
import "./lists.css";

const PAGE_SIZE = 25;
const REFRESH_MS = 3000;

export function ExecutionList() {
  const query = useHashQuery();
  const status = query.get("status") ?? "";
  const workflowId = query.get("workflow_id") ?? "";
  const page = pageParam(query);
  const { workflows, error: workflowsError } = useAllWorkflows();
  const names = useMemo(() => new Map((workflows ?? []).map((w) => [w.id, w.name])), [workflows]);

  const [data, setData] = useState<Page<Execution> | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [, setTick] = useState(0); // re-render so that running durations and "ago" move on
  const latestRequest = useRef(0);

  const load = useCallback(async () => {
    const request = ++latestRequest.current;
    const params = new URLSearchParams({ page: String(page), page_size: String(PAGE_SIZE) });
    if (status) params.set("status", status);
    if (workflowId) params.set("workflow_id", workflowId);
    try {
      const reply = await api<Page<Execution>>(`/api/v1/executions?${params}`);
      if (request !== latestRequest.current) return; // the filters changed meanwhile
      setData(reply);
      setError(null);
    } catch (caught) {
      if (request === latestRequest.current) setError(errorMessage(caught));
    }
  }, [page, status, workflowId]);

  useEffect(() => {
    setData(null);
    load();
  }, [load]);

  const live = data?.items.some((execution) => !isFinal(execution.status)) ?? false;
  useEffect(() => {
    if (!live) return;
    const timer = window.setInterval(() => {
      setTick((n) => n + 1);
      load();
    }, REFRESH_MS);
    return () => window.clearInterval(timer);
  }, [live, load]);

  const filter = (changes: { status?: string; workflow_id?: string }) =>
    navigateWithQuery("/executions", {
      status,
      workflow_id: workflowId,
      ...changes,
      page: null,
    });
  const filtered = Boolean(status || workflowId);
  const knownWorkflow = !workflowId || !workflows || names.has(workflowId);

  return (
    <div className="page">
      <header className="page-header">
        <div>
          <h1>Executions</h1>
          <p className="muted">
            Runs of workflows, newest first.
            {live && (
              <span className="live" data-testid="auto-refresh" title={`Refreshed every ${REFRESH_MS / 1000} s`}>
                {" "}
                ● live
              </span>
            )}
          </p>
        </div>
      </header>
      <div className="toolbar" role="search">
        <label>
          Status
          <select
            data-testid="filter-status"
            value={status}
            onChange={(event) => filter({ status: event.target.value })}
          >
            <option value="">Any status</option>
            {EXECUTION_STATUSES.map((name) => (
              <option key={name} value={name}>
                {name}
              </option>
            ))}
          </select>
        </label>
        <label>
          Workflow
          <select
            data-testid="filter-workflow"
            value={workflowId}
            onChange={(event) => filter({ workflow_id: event.target.value })}
          >
            <option value="">All workflows</option>
            {!knownWorkflow && <option value={workflowId}>{shortId(workflowId)} (deleted?)</option>}
            {(workflows ?? []).map((workflow) => (
              <option key={workflow.id} value={workflow.id}>
                {workflow.name}
              </option>
            ))}
          </select>
        </label>
        {filtered && (
          <button className="link" data-testid="clear-filters" onClick={() => navigate("/executions")}>
            Clear filters
          </button>
        )}
        {data && <span className="muted count">{countText(data.total, filtered)}</span>}
      </div>
      <ErrorNote error={error} onRetry={load} />
      <ErrorNote error={workflowsError && `Workflow names could not be loaded: ${workflowsError}`} />
      {data === null ? (
        !error && <p className="muted loading">Loading executions…</p>
      ) : data.items.length === 0 ? (
        filtered ? (
          <EmptyState title="No executions match these filters">
            <p>Pick another status or workflow, or clear the filters.</p>
            <button onClick={() => navigate("/executions")}>Clear filters</button>
          </EmptyState>
        ) : page > 1 ? (
          <EmptyState title={`Page ${page} is empty`}>
            <button onClick={() => navigateWithQuery("/executions", { page: 1 })}>
              Go to the first page
            </button>
          </EmptyState>
        ) : (
          <EmptyState title="No executions yet">
            <p>
              Start one from the <a href="#/workflows">Workflows</a> page with{" "}
              <strong>Run</strong>, through <code>POST /api/v1/workflows/&lt;id&gt;/execute</code>,
              or with a <a href="#/schedules">schedule</a>.
            </p>
          </EmptyState>
        )
      ) : (
        <>
          <div className="table-wrap">
            <table className="data" data-testid="execution-list">
              <thead>
                <tr>
                  <th>Execution</th>
                  <th>Workflow</th>
                  <th className="num">Version</th>
                  <th>Status</th>
                  <th>Started</th>
                  <th className="num">Duration</th>
                  <th>Trigger</th>
                </tr>
              </thead>
              <tbody>
                {data.items.map((execution) => (
                  <tr
                    key={execution.id}
                    className="clickable"
                    data-testid={`execution-row-${execution.id}`}
                    data-status={execution.status}
                    onClick={() => navigate(`/executions/${execution.id}`)}
                  >
                    <td>
                      <a
                        className="mono"
                        href={`#/executions/${execution.id}`}
                        title={execution.id}
                        onClick={(event) => event.stopPropagation()}
                      >
                        {shortId(execution.id)}
                      </a>
                    </td>
                    <td className="ellipsis-cell" title={names.get(execution.workflow_id)}>
                      {names.get(execution.workflow_id) ?? (
                        <span className="muted mono" title={execution.workflow_id}>
                          {shortId(execution.workflow_id)}
                        </span>
                      )}
                    </td>
                    <td className="num">
                      {execution.workflow_version ? `v${execution.workflow_version}` : "—"}
                    </td>
                    <td>
                      <StatusBadge status={execution.status} />
                    </td>
                    <td>
                      <RelativeTime value={execution.started_at ?? execution.created_at} />
                    </td>
                    <td className="num">{formatDuration(duration(execution))}</td>
                    <td className="muted">{execution.trigger || "—"}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
          <Pager
            page={page}
            pageSize={PAGE_SIZE}
            total={data.total}
            onPage={(next) =>
              navigateWithQuery("/executions", { status, workflow_id: workflowId, page: next })
            }
          />
        </>
      )}
    </div>
  );
}

function duration(execution: Execution): number | null {
  if (execution.duration_ms !== null && execution.duration_ms !== undefined)
    return execution.duration_ms;
  // Still running: how long so far.
  if (execution.started_at && !execution.finished_at && !isFinal(execution.status))
    return Date.now() - new Date(execution.started_at).getTime();
  return null;
}

function countText(total: number, filtered: boolean): string {
  const noun = total === 1 ? "execution" : "executions";
  return filtered ? `${total} matching ${noun}` : `${total} ${noun}`;
}
