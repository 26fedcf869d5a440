// The problems of the last validation, errors first; a click selects what a problem is on.
import { useState } from "react";
import type { LocatedIssue, ValidationState } from "./validation";

export function IssuesPanel({
  state,
  blank,
  stale,
  describe,
  onPick,
}: {
  state: ValidationState;
  /** Nothing written yet: a hint instead of problems. */
  blank?: boolean;
  /** The document changed since the issues were computed (a check is due). */
  stale: boolean;
  describe: (issue: LocatedIssue) => string;
  onPick: (issue: LocatedIssue) => void;
}) {
  const [open, setOpen] = useState(true);
  const errors = state.issues.filter((issue) => issue.severity !== "warning");
  const warnings = state.issues.filter((issue) => issue.severity === "warning");
  const ordered = [...errors, ...warnings];
  let summary: string;
  let tone: string;
  if (blank) {
    summary = "Nothing to check yet: add a node from the palette and name the workflow.";
    tone = "muted";
  } else if (state.status === "failed") {
    summary = state.error ?? "Validation unavailable";
    tone = "warning";
  } else if (state.status === "idle" || (state.checkedKey === null && state.status === "checking")) {
    summary = "Checking…";
    tone = "muted";
  } else if (errors.length) {
    summary = `${errors.length} error${errors.length === 1 ? "" : "s"}`;
    if (warnings.length) summary += `, ${warnings.length} warning${warnings.length === 1 ? "" : "s"}`;
    tone = "error";
  } else if (warnings.length) {
    summary = `Valid, ${warnings.length} warning${warnings.length === 1 ? "" : "s"}`;
    tone = "warning";
  } else {
    summary = "Valid — no problems";
    tone = "ok";
  }
  const checking = !blank && (state.status === "checking" || stale);

  return (
    <section className={`ed-issues${open ? " open" : ""}`} data-testid="validation-issues" aria-label="Problems">
      <button type="button" className="ed-issues-head" aria-expanded={open} onClick={() => setOpen(!open)}>
        <span className="ed-caret">{open ? "▾" : "▸"}</span>
        <strong>Problems</strong>
        <span className={`ed-issues-summary ${tone}`} data-testid="validation-summary" data-valid={state.status === "done" && !stale && !errors.length ? "true" : "false"}>
          {summary}
        </span>
        {checking && state.checkedKey !== null && <span className="ed-muted ed-small">checking…</span>}
      </button>
      {open && !blank && ordered.length > 0 && (
        <ul>
          {ordered.map((issue, index) => (
            <li key={index}>
              <button
                type="button"
                className={`ed-issue ${issue.severity === "warning" ? "warning" : "error"}`}
                data-testid="validation-issue"
                title={issue.code}
                onClick={() => onPick(issue)}
              >
                <span className="ed-issue-dot" aria-hidden />
                <span className="ed-issue-where">{describe(issue)}</span>
                <span className="ed-issue-message">{issue.message}</span>
              </button>
            </li>
          ))}
        </ul>
      )}
    </section>
  );
}
