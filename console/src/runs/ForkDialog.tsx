// "Fork from here" on a completed node: a JSON editor prefilled with the node's output, sent as
// POST /executions/{id}/fork {from_node, output} (or without output: the node runs again); the
// console then opens the new execution. ForkedFrom is the new execution's link back.
import { useState } from "react";
import { ForkEditor, useFork } from "./forkEditor";
import "./agentRuns.css";

export function ForkDialog({ executionId, nodeId, output }: { executionId: string; nodeId: string; output: unknown }) {
  const [open, setOpen] = useState(false);
  const forkState = useFork(executionId, output ?? null);
  const { sending } = forkState;
  const fork = (withOutput: boolean) =>
    forkState.send((edited) => (withOutput ? { from_node: nodeId, output: edited } : { from_node: nodeId }), withOutput);

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
      <ForkEditor fork={forkState} testId="fork-output" errorTestId="fork-error" minRows={4} maxRows={14} />
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
