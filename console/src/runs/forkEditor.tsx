// What both forks share (a node's output in ForkDialog, an agent step in AgentSteps): a JSON
// editor, POST /executions/{id}/fork with what it holds, the new execution opened on success
// and the error, located by field, shown under the editor.
import { useState } from "react";
import { ApiError, api } from "../lib/api";
import { navigate } from "../lib/router";
import { prettyJson } from "./format";

export interface Fork {
  text: string;
  setText: (text: string) => void;
  problem: string | null;
  sending: boolean;
  /** Send the fork whose body makeBody builds from the editor's JSON (not read without withText). */
  send: (makeBody: (edited: unknown) => Record<string, unknown>, withText?: boolean) => Promise<void>;
}

export function useFork(executionId: string, initial: unknown): Fork {
  const [text, setText] = useState(() => prettyJson(initial));
  const [problem, setProblem] = useState<string | null>(null);
  const [sending, setSending] = useState(false);
  const send = async (makeBody: (edited: unknown) => Record<string, unknown>, withText = true) => {
    setProblem(null);
    let edited: unknown;
    if (withText) {
      try {
        edited = JSON.parse(text);
      } catch (error) {
        setProblem(`Invalid JSON: ${(error as Error).message}`);
        return;
      }
    }
    setSending(true);
    try {
      const started = await api<{ execution_id: string }>(`/api/v1/executions/${encodeURIComponent(executionId)}/fork`, {
        method: "POST",
        body: makeBody(edited),
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
  return { text, setText, problem, sending, send };
}

export function ForkEditor({ fork, testId, errorTestId, minRows, maxRows }: { fork: Fork; testId: string; errorTestId: string; minRows: number; maxRows: number }) {
  return (
    <>
      <textarea
        data-testid={testId}
        className="ev-mono ar-fork-output"
        rows={Math.min(maxRows, Math.max(minRows, fork.text.split("\n").length))}
        spellCheck={false}
        value={fork.text}
        disabled={fork.sending}
        onChange={(event) => fork.setText(event.target.value)}
      />
      {fork.problem && (
        <p className="error" data-testid={errorTestId}>
          {fork.problem}
        </p>
      )}
    </>
  );
}
