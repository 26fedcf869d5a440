// A tool call an agent waits to have approved (the node's `waiting.approval`): the tool and its
// arguments (pretty JSON, editable), answered with approve, approve edited, or reject with a
// reason, through POST /executions/{id}/input (the body services/node/executors/agent.py's
// DECISION_SCHEMA describes). Also used by the chat playground.
import { useState } from "react";
import { ApiError, api } from "../lib/api";
import type { ExecutionDetail } from "./executionState";
import { prettyJson } from "./format";
import "./agentRuns.css";

export interface Approval {
  key?: string;
  tool: string;
  arguments: Record<string, unknown>;
  step?: string;
  index?: number;
}

/** The approval a waiting node asks for, if its `waiting` is one. */
export function approvalOf(waiting: unknown): Approval | null {
  const approval = (waiting as { approval?: unknown } | null | undefined)?.approval;
  if (!approval || typeof approval !== "object") return null;
  const record = approval as Record<string, unknown>;
  if (typeof record.tool !== "string") return null;
  const args = record.arguments && typeof record.arguments === "object" ? record.arguments : {};
  return { ...(record as object), tool: record.tool, arguments: args as Record<string, unknown> };
}

type Decision = { action: "approve" } | { action: "edit"; arguments: Record<string, unknown> } | { action: "reject"; message: string };

export function ApprovalPanel({
  executionId,
  nodeId,
  approval,
  onSubmitted,
}: {
  executionId: string;
  nodeId: string;
  approval: Approval;
  onSubmitted: (detail: ExecutionDetail) => void;
}) {
  const original = prettyJson(approval.arguments);
  const [text, setText] = useState(original);
  const [reason, setReason] = useState("");
  const [rejecting, setRejecting] = useState(false);
  const [problem, setProblem] = useState<string | null>(null);
  const [sending, setSending] = useState(false);
  const [sent, setSent] = useState<string | null>(null);

  let edited: Record<string, unknown> | null = null;
  let parseError: string | null = null;
  try {
    const value: unknown = JSON.parse(text);
    if (value && typeof value === "object" && !Array.isArray(value)) edited = value as Record<string, unknown>;
    else parseError = "The arguments must be a JSON object.";
  } catch (error) {
    parseError = `Invalid JSON: ${(error as Error).message}`;
  }
  const changed = edited !== null && JSON.stringify(edited) !== JSON.stringify(approval.arguments);

  const decide = async (decision: Decision) => {
    setProblem(null);
    setSending(true);
    try {
      const detail = await api<ExecutionDetail>(`/api/v1/executions/${encodeURIComponent(executionId)}/input`, {
        method: "POST",
        body: { node_id: nodeId, data: decision },
      });
      setSent(decision.action);
      onSubmitted(detail);
    } catch (error) {
      const details = error instanceof ApiError && Array.isArray(error.details) ? error.details : [];
      const located = (details as { field?: unknown; message?: string }[])
        .map((item) => `${item.field ?? ""}: ${item.message ?? ""}`)
        .join(" ");
      setProblem(`${(error as Error).message}${located ? ` ${located}` : ""}`);
    } finally {
      setSending(false);
    }
  };

  const done = sending || sent !== null;
  return (
    <div className="ar-approval" data-testid="approval-panel" data-tool={approval.tool}>
      <div className="ev-human-title">Tool call needs approval</div>
      <p className="ar-approval-tool">
        The agent wants to call <code data-testid="approval-tool">{approval.tool}</code>
        {approval.step !== undefined && <span className="ev-muted"> (step {approval.step})</span>}
      </p>
      <label className="rf-label" htmlFor={`approval-args-${nodeId}`}>
        <span className="rf-name">Arguments</span>
        <span className="rf-kind">JSON{changed ? " · edited" : ""}</span>
      </label>
      <textarea
        id={`approval-args-${nodeId}`}
        data-testid="approval-arguments"
        className="ev-mono ar-approval-args"
        rows={Math.min(12, Math.max(3, text.split("\n").length))}
        spellCheck={false}
        value={text}
        disabled={done}
        onChange={(event) => setText(event.target.value)}
      />
      {parseError && (
        <div className="rf-error" data-testid="approval-arguments-error">
          {parseError}
        </div>
      )}
      <div className="ar-approval-actions">
        <button
          className="primary"
          data-testid="approval-approve"
          disabled={done || changed}
          title={changed ? "The arguments are edited: approve the edited ones, or undo the edit" : undefined}
          onClick={() => decide({ action: "approve" })}
        >
          Approve
        </button>
        <button
          data-testid="approval-approve-edited"
          disabled={done || !changed || edited === null}
          onClick={() => edited && decide({ action: "edit", arguments: edited })}
        >
          Approve edited
        </button>
        <button className="danger" data-testid="approval-reject" disabled={done} onClick={() => setRejecting(true)}>
          Reject…
        </button>
      </div>
      {rejecting && (
        <div className="ar-approval-reject">
          <input
            data-testid="approval-reason"
            placeholder="Why (the model reads this as the tool's answer)"
            value={reason}
            disabled={done}
            onChange={(event) => setReason(event.target.value)}
          />
          <button
            className="danger"
            data-testid="approval-reject-confirm"
            disabled={done}
            onClick={() => decide({ action: "reject", message: reason.trim() || "no reason given" })}
          >
            Reject
          </button>
        </div>
      )}
      {problem && (
        <p className="error" data-testid="approval-error">
          {problem}
        </p>
      )}
      {sent && (
        <p className="ev-muted" data-testid="approval-sent">
          Sent: {sent === "edit" ? "approved with edited arguments" : sent === "approve" ? "approved" : "rejected"}.
        </p>
      )}
    </div>
  );
}
