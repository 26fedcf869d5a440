// Live validation: the definition goes to POST /api/v1/workflows/validate ~400 ms after the
// last change, and each problem is pinned to a canvas node or edge of the document that was
// sent (canvas ids never change, so a later rename or move keeps it in place).
import { useCallback, useEffect, useRef, useState } from "react";
import { api, ApiError } from "../lib/api";
import type { ValidationIssue, ValidationReport } from "../lib/types";
import { EMPTY_DOC, toDefinition, type Doc } from "./model";

export const VALIDATE_DELAY_MS = 400;

export interface LocatedIssue extends ValidationIssue {
  /** Canvas id of the node the problem is on. */
  nodeKey?: string;
  /** Canvas id of the edge the problem is on. */
  edgeKey?: string;
  /** The path inside that node or edge, e.g. `params.url`, `on_error`, `source_port`. */
  path?: string;
}

export interface ValidationState {
  status: "idle" | "checking" | "done" | "failed";
  valid: boolean;
  issues: LocatedIssue[];
  /** The definition (without positions) the issues are about. */
  checkedKey: string | null;
  error: string | null;
}

export function validationKey(doc: Doc): string {
  return JSON.stringify(toDefinition(doc, false));
}

/** The key of a blank document: nothing to check, so nothing is reported on it. */
export const BLANK_KEY = validationKey(EMPTY_DOC);

/** Server messages in words a workflow's author uses (pydantic speaks of strings). */
function friendly(issue: ValidationIssue): ValidationIssue {
  if (issue.field === "name" && /at least 1 character/.test(issue.message)) {
    return { ...issue, message: "The workflow needs a name (the box at the top left)." };
  }
  return issue;
}

export function locate(report: ValidationReport, sent: Doc): LocatedIssue[] {
  const firstById = new Map<string, string>();
  for (const node of sent.nodes) if (!firstById.has(node.data.def.id)) firstById.set(node.data.def.id, node.id);
  return report.issues.map((issue) => {
    const located: LocatedIssue = { ...friendly(issue) };
    const onNode = issue.field?.match(/^nodes\[(\d+)\]\.?(.*)$/);
    const onEdge = issue.field?.match(/^edges\[(\d+)\]\.?(.*)$/);
    if (onNode) {
      located.nodeKey = sent.nodes[Number(onNode[1])]?.id;
      located.path = onNode[2];
    } else if (issue.node_id) {
      located.nodeKey = firstById.get(issue.node_id);
    }
    if (issue.edge !== null && issue.edge !== undefined) {
      located.edgeKey = sent.edges[issue.edge]?.id;
      if (onEdge) located.path = onEdge[2];
    }
    return located;
  });
}

export function useValidation(doc: Doc, enabled: boolean, initial?: ValidationState) {
  const [state, setState] = useState<ValidationState>(
    initial ?? { status: "idle", valid: false, issues: [], checkedKey: null, error: null },
  );
  const current = useRef(state);
  current.current = state;
  const latest = useRef(doc);
  latest.current = doc;
  const sequence = useRef(0);

  /** Validates now; the report, or null when the gateway could not be asked. */
  const validate = useCallback(async (sent: Doc): Promise<ValidationReport | null> => {
    const mine = ++sequence.current;
    const key = validationKey(sent);
    setState((current) => ({ ...current, status: "checking" }));
    try {
      const report = await api<ValidationReport>("/api/v1/workflows/validate", {
        method: "POST",
        body: toDefinition(sent, false),
      });
      if (mine === sequence.current) {
        const next: ValidationState = { status: "done", valid: report.valid, issues: locate(report, sent), checkedKey: key, error: null };
        current.current = next;
        setState(next);
      }
      return report;
    } catch (error) {
      if (mine === sequence.current) {
        const message = error instanceof ApiError ? error.message : "the gateway is unreachable";
        setState((current) => ({ ...current, status: "failed", error: `Validation unavailable: ${message}` }));
      }
      return null;
    }
  }, []);

  const key = validationKey(doc);
  useEffect(() => {
    if (!enabled || (state.status === "done" && state.checkedKey === key)) return;
    const timer = window.setTimeout(() => void validate(latest.current), VALIDATE_DELAY_MS);
    return () => window.clearTimeout(timer);
  }, [key, enabled, validate]);

  /** The latest state, even before React renders it. */
  const latestState = useCallback(() => current.current, []);

  return { state, validate, latestState, currentKey: key };
}
