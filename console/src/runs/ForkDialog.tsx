// "Fork from here" on a completed node: a JSON editor prefilled with the node's output, sent as
// POST /executions/{id}/fork {from_node, output} (or without output: the node runs again); the
// console then opens the new execution. ForkedFrom is the new execution's link back.
import { useState } from "react";
import { ApiError, api } from "../lib/api";
import { navigate } from "../lib/router";
import { prettyJson } from "./format";
import "./agentRuns.css";

export function ForkDialog({ executionId, nodeId, output }: { executionId: string; nodeId: string; output: unknown }) {
  const [open, setOpen] = useState(false);
  const [text, setText] = useState(() => prettyJson(output ?? null));
  const [problem, setProblem] = useState<string | null>(null);
  const [sending, setSending] = useState(false);

  const fork = async (withOutput: boolean) => {
    setProblem(null);
    const body: { from_node: string; output?: unknown } = { from_node: nodeId };
    if (withOutput) {
      try {
        body.output = JSON.parse(text);
      } catch (error) {
        setProblem(`Invalid JSON: ${(error as Error).message}`);
        return;
      }
    }
    setSending(true);
    try {
      const started = await api<{ execution_id: string }>(`/api/v1/executions/${encodeURIComponent(executionId)}/fork`, {
        method: "POST",
        body,
      });
      navigate(`/executions/${started.execution_id}`);
    } catch (error) {
      const details = error instanceof ApiError && Array.isArray(error.details) ? error.details : [];
      const located = (details as { field?: unknown; message?: string }[])
        .map((item) => `${item.field ?? ""}: ${item.message ?? ""}`)
        .join("; ");
      setProblem(`${(error as Error).message}${located ? ` (${located})` : ""}`);
      setSending(false);
    }
  };

  if (!open) {
    return (
      <div className="ar-fork-open">
        <button
          data-testid="fork-open"
          title="Re-run the execution from this node, with its output edited or not, as a new execution"
          onClick={() => setOpen(true)}
        >
          Fork from here
        </button>
      </div>
    );
  }
  return (
    <section className="ev-section ar-fork" data-testid="fork-dialog">
      <h3>Fork from {nodeId}</h3>
      <p className="ev-muted">
        A new execution reuses everything upstream; this node takes the output below, and what follows it runs again.
      </p>
      <textarea
        data-testid="fork-output"
        className="ev-mono ar-fork-output"
        rows={Math.min(14, Math.max(4, text.split("\n").length))}
        spellCheck={false}
        value={text}
        disabled={sending}
        onChange={(event) => setText(event.target.value)}
      />
      {problem && (
        <p className="error" data-testid="fork-error">
          {problem}
        </p>
      )}
      <div className="ar-approval-actions">
        <button className="primary" data-testid="fork-submit" disabled={sending} onClick={() => fork(true)}>
          Fork with this output
        </button>
        <button data-testid="fork-rerun" disabled={sending} title="The node runs again" onClick={() => fork(false)}>
          Fork, run the node again
        </button>
        <button className="link" data-testid="fork-cancel" disabled={sending} onClick={() => setOpen(false)}>
          Cancel
        </button>
      </div>
    </section>
  );
}

export function ForkedFrom({ from }: { from: { execution_id: string; node_id: string } | null | undefined }) {
  if (!from) return null;
  return (
    <span className="ar-forked-from" data-testid="forked-from">
      forked from{" "}
      <a
        href={`#/executions/${from.execution_id}`}
        className="ev-mono"
        title={from.execution_id}
        data-testid="forked-from-link"
      >
        {from.execution_id.slice(0, 8)}
      </a>{" "}
      / <code>{from.node_id}</code>
    </span>
  );
}
