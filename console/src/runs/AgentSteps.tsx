// The step timeline of an agent node: its journal (the node's checkpoint `{journal: [...]}`, the
// full entries with the model's text, tool arguments and results; or, without one, the
// output's `steps`), with the steps that `agent.step` events announced since the detail was
// read appended live. A tool_result that ran a child execution (delegation to an agent or a
// workflow) links it.
import type { ReactNode } from "react";
import type { NodeRunDetail, StreamEvent } from "./executionState";
import { formatDuration, prettyJson } from "./format";
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

export function AgentSteps({ run, events }: { run: NodeRunDetail | undefined; events: readonly StreamEvent[] }) {
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
