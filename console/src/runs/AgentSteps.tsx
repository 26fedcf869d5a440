// The step timeline of an agent node: its journal (the node's checkpoint `{journal: [...]}`, the
// full entries with the model's text, tool arguments and results; or, without one, the
// output's `steps`), with the steps that `agent.step` events announced since the detail was
// read appended live. A tool_result that ran a child execution (delegation to an agent or a
// workflow) links it.
import { useState, type ReactNode } from "react";
import type { NodeRunDetail, StreamEvent } from "./executionState";
import { formatDuration, prettyJson } from "./format";
import { ForkEditor, useFork } from "./forkEditor";
import "./agentRuns.css";

interface StepRow {
  key: string;
  type: string;
  step?: string;
  index?: number;
  name?: string;
  tokens?: number;
  duration_ms?: number;
  text?: string;
  arguments?: unknown;
  result?: unknown;
  approval?: string;
  child_execution_id?: string;
  /** Only announced by an event so far (its arguments/result come with the next detail). */
  live: boolean;
  /** The journal entry as stored, and its position there (what a fork edits). */
  journalAt?: number;
  entry?: Entry;
}

type Entry = Record<string, unknown>;

function stepKey(entry: Entry): string | null {
  if (entry.step === undefined || entry.step === null) return null;
  return `${String(entry.type)}/${String(entry.step)}/${entry.index ?? ""}`;
}

function rowOf(entry: Entry, position: number, live: boolean): StepRow {
  const reply = (entry.reply ?? {}) as Entry;
  const child = entry.child_execution_id ?? (entry.result as Entry | null | undefined)?.child_execution_id;
  const text = typeof entry.text === "string" ? entry.text : typeof reply.text === "string" ? reply.text : undefined;
  return {
    key: stepKey(entry) ?? `#${position}`,
    type: String(entry.type ?? "step"),
    step: entry.step === undefined ? undefined : String(entry.step),
    index: typeof entry.index === "number" ? entry.index : undefined,
    name: typeof entry.name === "string" ? entry.name : undefined,
    tokens: typeof entry.tokens === "number" ? entry.tokens : undefined,
    duration_ms: typeof entry.duration_ms === "number" ? entry.duration_ms : undefined,
    text,
    arguments: entry.arguments,
    result: "result" in entry ? entry.result : undefined,
    approval: typeof entry.approval === "string" ? entry.approval : undefined,
    child_execution_id: typeof child === "string" && child ? child : undefined,
    live,
  };
}

/** The rows of the timeline: the stored journal (or output steps), then newer events' steps. */
export function agentStepRows(run: NodeRunDetail | undefined, events: readonly StreamEvent[]): StepRow[] {
  const journal = (run?.checkpoint as { journal?: unknown } | null | undefined)?.journal;
  const outputSteps = (run?.output as { steps?: unknown } | null | undefined)?.steps;
  const stored: Entry[] = Array.isArray(journal) ? journal : Array.isArray(outputSteps) ? outputSteps : [];
  const rows = stored.map((entry, position) => rowOf(entry, position, false));
  if (Array.isArray(journal)) rows.forEach((row, position) => Object.assign(row, { journalAt: position, entry: stored[position] }));
  // Output steps carry no step numbers to match events with; they are the whole run anyway.
  if (!Array.isArray(journal) && stored.length > 0) return rows;
  const seen = new Set(rows.map((row) => row.key));
  for (const event of events) {
    const data = (event.data ?? {}) as Entry;
    const key = stepKey(data);
    if (key === null || seen.has(key)) continue;
    seen.add(key);
    rows.push(rowOf(data, rows.length, true));
  }
  return rows;
}

function Detail({ label, children }: { label: string; children: ReactNode }) {
  return (
    <div className="ar-step-detail">
      <div className="ar-step-label">{label}</div>
      {children}
    </div>
  );
}

export function AgentSteps({
  run,
  events,
  executionId,
}: {
  run: NodeRunDetail | undefined;
  events: readonly StreamEvent[];
  /** Given for a completed agent node: its journaled steps can be edited into a fork. */
  executionId?: string;
}) {
  const rows = agentStepRows(run, events);
  const tokens = rows.reduce((sum, row) => sum + (row.type === "model_call" ? (row.tokens ?? 0) : 0), 0);
  return (
    <section className="ev-section" data-testid="agent-steps">
      <h3>
        Steps
        <span className="ev-section-aside">
          {rows.length} · {tokens} tokens
        </span>
      </h3>
      {rows.length === 0 && <div className="ev-muted">No steps yet.</div>}
      <ol className="ar-steps">
        {rows.map((row, position) => {
          const expandable = row.text || row.arguments !== undefined || row.result !== undefined;
          const head = (
            <span className="ar-step-head">
              <span className="ar-step-no">{position + 1}</span>
              <span className={`ar-step-type t-${row.type}`} data-testid="agent-step-type">
                {row.type}
              </span>
              {row.name && <code className="ar-step-tool">{row.name}</code>}
              {row.approval && <span className="ev-tag">{row.approval === "edit" ? "edited" : row.approval}</span>}
              {row.live && <span className="ev-live-dot">live</span>}
              <span className="ar-step-meta">
                {row.tokens !== undefined && row.type === "model_call" && <span>{row.tokens} tok</span>}
                {row.duration_ms !== undefined && <span>{formatDuration(row.duration_ms)}</span>}
              </span>
            </span>
          );
          return (
            <li
              key={row.key}
              className="ar-step"
              data-testid="agent-step"
              data-type={row.type}
              data-step={row.step ?? ""}
              data-tool={row.name ?? ""}
            >
              {expandable ? (
                <details>
                  <summary>{head}</summary>
                  {row.text && (
                    <Detail label={row.type === "model_call" ? "model text" : "text"}>
                      <pre className="ev-json">{row.text}</pre>
                    </Detail>
                  )}
                  {row.arguments !== undefined && (
                    <Detail label="arguments">
                      <pre className="ev-json" data-testid="agent-step-arguments">
                        {prettyJson(row.arguments)}
                      </pre>
                    </Detail>
                  )}
                  {row.result !== undefined && (
                    <Detail label="result">
                      <pre className="ev-json" data-testid="agent-step-result">
                        {prettyJson(row.result)}
                      </pre>
                    </Detail>
                  )}
                  {executionId && run && row.entry && row.journalAt !== undefined && (
                    <StepFork executionId={executionId} nodeId={run.node_id} step={row.journalAt} entry={row.entry} />
                  )}
                </details>
              ) : (
                <div className="ar-step-flat">{head}</div>
              )}
              {row.child_execution_id && row.type === "tool_result" && (
                <a
                  className="ar-step-child ev-mono"
                  data-testid="agent-step-child"
                  href={`#/executions/${row.child_execution_id}`}
                >
                  child execution {row.child_execution_id.slice(0, 8)} →
                </a>
              )}
            </li>
          );
        })}
      </ol>
    </section>
  );
}

/** The fields of a journal entry a fork may edit (services/gateway/routes/forks.py). */
function editable(entry: Entry): Entry {
  switch (entry.type) {
    case "model_call": {
      const reply = (entry.reply ?? {}) as Entry;
      return { reply: { text: reply.text ?? "", tool_calls: reply.tool_calls ?? [] } };
    }
    case "tool_call":
      return { arguments: entry.arguments ?? {} };
    case "tool_result":
      return { result: entry.result ?? null };
    case "final":
      return { text: entry.text ?? "" };
    default:
      return {};
  }
}

/** "Fork from this step": the step's editable fields as JSON, sent as {from_node, step, entry}. */
function StepFork({ executionId, nodeId, step, entry }: { executionId: string; nodeId: string; step: number; entry: Entry }) {
  const [open, setOpen] = useState(false);
  const fork = useFork(executionId, editable(entry));
  if (Object.keys(editable(entry)).length === 0) return null;
  if (!open) {
    return (
      <button className="link ar-step-fork" data-testid="step-fork-open" onClick={() => setOpen(true)}>
        Edit this step and fork
      </button>
    );
  }
  const submit = () => fork.send((edited) => ({ from_node: nodeId, step, entry: edited }));
  return (
    <div className="ar-step-detail" data-testid="step-fork">
      <div className="ar-step-label">edited step (the fork replays the steps before it, then runs on)</div>
      <ForkEditor fork={fork} testId="step-fork-entry" errorTestId="step-fork-error" minRows={3} maxRows={10} />
      <button className="primary" data-testid="step-fork-submit" disabled={fork.sending} onClick={submit}>
        Fork from this step
      </button>
    </div>
  );
}
