// What the selected node produced in the workflow's latest execution: read when the editor
// opens (GET /api/v1/executions?workflow_id=…&page_size=1, then that execution's detail), so a
// click on a node shows its last output or error beside its params.
import { useEffect, useState } from "react";
import { api, type Page } from "../lib/api";
import type { Execution } from "../lib/types";
import type { ExecutionDetail } from "../runs/executionState";
import { formatDuration, formatTime, prettyJson } from "../runs/format";

export type LastRunState =
  | { status: "none" }
  | { status: "loading" }
  | { status: "failed"; message: string }
  | { status: "loaded"; execution: ExecutionDetail };

/** The latest execution of a saved workflow; `none` for a new one or one never run. */
export function useLastRun(workflowId: string | null): LastRunState {
  const [state, setState] = useState<LastRunState>(workflowId ? { status: "loading" } : { status: "none" });
  useEffect(() => {
    if (!workflowId) return;
    let live = true;
    (async () => {
      const query = new URLSearchParams({ workflow_id: workflowId, page_size: "1" });
      const page = await api<Page<Execution>>(`/api/v1/executions?${query}`);
      const latest = page.items[0];
      if (!latest) return { status: "none" } as const;
      const execution = await api<ExecutionDetail>(`/api/v1/executions/${encodeURIComponent(latest.id)}`);
      return { status: "loaded", execution } as const;
    })()
      .then((next) => live && setState(next))
      .catch((error: unknown) => live && setState({ status: "failed", message: error instanceof Error ? error.message : String(error) }));
    return () => {
      live = false;
    };
  }, [workflowId]);
  return state;
}

export function LastRun({ nodeId, state }: { nodeId: string; state: LastRunState }) {
  let body;
  if (state.status === "loading") body = <p className="ed-muted ed-small">Loading…</p>;
  else if (state.status === "failed") body = <p className="ed-field-error">Could not read the last run: {state.message}</p>;
  else if (state.status === "none") body = <p className="ed-muted ed-small">Not run yet: ▶ Run shows here what each node produced.</p>;
  else {
    const { execution } = state;
    const run = execution.nodes.find((candidate) => candidate.node_id === nodeId);
    const link = (
      <a href={`#/executions/${execution.id}`} data-testid="last-run-link">
        execution of {formatTime(execution.created_at)}
      </a>
    );
    if (!run) {
      body = <p className="ed-muted ed-small">This node was not part of the latest run ({link}, v{execution.workflow_version}).</p>;
    } else {
      body = (
        <>
          <p className="ed-small ed-last-run-head">
            <span className={`ed-run-status st-${run.status}`} data-testid="last-run-status">
              {run.status}
            </span>
            {typeof run.duration_ms === "number" && <span className="ed-muted"> in {formatDuration(run.duration_ms)}</span>}
            <span className="ed-muted"> · {link}</span>
          </p>
          {run.error && (
            <pre className="ed-last-run-error" data-testid="last-run-error">
              {run.error.type}: {run.error.message}
            </pre>
          )}
          {run.output !== undefined && run.output !== null && (
            <pre className="ed-last-run-output" data-testid="last-run-output">
              {prettyJson(run.output)}
            </pre>
          )}
        </>
      );
    }
  }
  return (
    <section className="ed-last-run" data-testid="last-run" aria-label="Last run">
      <h4>Last run</h4>
      {body}
    </section>
  );
}
