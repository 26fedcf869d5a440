// Small pieces the list pages share (and other pages may import): the status badge, the
// pager, times and durations, the empty state, the two-step delete, the hash query.
import { useCallback, useEffect, useState, type ReactNode } from "react";
import { ApiError, api, type Page } from "../lib/api";
import { navigate } from "../lib/router";
import type { ExecutionStatus, Workflow } from "../lib/types";
import "./lists.css";

export const EXECUTION_STATUSES: ExecutionStatus[] = [
  "pending",
  "running",
  "paused",
  "succeeded",
  "failed",
  "cancelled",
];
const FINAL = new Set(["succeeded", "failed", "cancelled"]);

export function isFinal(status: string): boolean {
  return FINAL.has(status);
}

export function StatusBadge({ status }: { status: string }) {
  return (
    <span className={`badge status-${status}`} data-status={status}>
      {status}
    </span>
  );
}

export function shortId(id: string): string {
  return id.replace(/-/g, "").slice(0, 8);
}

/** A message for the user out of whatever a request threw. */
export function errorMessage(error: unknown): string {
  if (error instanceof ApiError) return error.message || `${error.status} ${error.code}`;
  if (error instanceof TypeError) return "The gateway could not be reached.";
  return error instanceof Error ? error.message : String(error);
}

const relative = new Intl.RelativeTimeFormat(undefined, { numeric: "auto" });
const STEPS: [Intl.RelativeTimeFormatUnit, number][] = [
  ["second", 60],
  ["minute", 60],
  ["hour", 24],
  ["day", 30],
  ["month", 12],
  ["year", Infinity],
];

export function formatRelative(value: string | Date, now: number = Date.now()): string {
  let amount = (new Date(value).getTime() - now) / 1000;
  if (Math.abs(amount) < 10) return amount > 0 ? "in a few seconds" : "just now";
  for (const [unit, size] of STEPS) {
    if (Math.abs(amount) < size) return relative.format(Math.round(amount), unit);
    amount /= size;
  }
  return relative.format(Math.round(amount), "year");
}

const absolute = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "medium" });

export function formatDateTime(value: string | Date): string {
  return absolute.format(new Date(value));
}

/** "3 min ago" with the exact local time on hover; a dash when there is no time. */
export function RelativeTime({ value }: { value: string | null | undefined }) {
  if (!value) return <span className="muted">—</span>;
  return (
    <time dateTime={value} title={formatDateTime(value)}>
      {formatRelative(value)}
    </time>
  );
}

// One formatter for durations on every run page (format.ts).
export { formatDuration } from "./format";

export function Pager({
  page,
  pageSize,
  total,
  onPage,
}: {
  page: number;
  pageSize: number;
  total: number;
  onPage: (page: number) => void;
}) {
  const pages = Math.max(1, Math.ceil(total / pageSize));
  if (total <= pageSize && page <= 1) return null;
  const first = Math.min(total, (page - 1) * pageSize + 1);
  const last = Math.min(total, page * pageSize);
  return (
    <nav className="pager" data-testid="pager" aria-label="Pages">
      <button disabled={page <= 1} onClick={() => onPage(page - 1)}>
        ← Previous
      </button>
      <span className="muted">
        {first}–{last} of {total} · page {page} of {pages}
      </span>
      <button disabled={page >= pages} onClick={() => onPage(page + 1)}>
        Next →
      </button>
    </nav>
  );
}

export function EmptyState({ title, children }: { title: string; children?: ReactNode }) {
  return (
    <div className="empty" data-testid="empty-state">
      <h2>{title}</h2>
      {children}
    </div>
  );
}

export function ErrorNote({ error, onRetry }: { error: string | null; onRetry?: () => void }) {
  if (!error) return null;
  return (
    <div className="note error-note" role="alert">
      <span>{error}</span>
      {onRetry && (
        <button className="link" onClick={onRetry}>
          Try again
        </button>
      )}
    </div>
  );
}

/** A delete button that asks once more in place before it acts. */
export function ConfirmDelete({
  what,
  onConfirm,
  testId,
}: {
  what: string;
  onConfirm: () => Promise<void> | void;
  testId?: string;
}) {
  const [asking, setAsking] = useState(false);
  const [busy, setBusy] = useState(false);
  if (!asking)
    return (
      <button className="danger small" data-testid={testId} onClick={() => setAsking(true)}>
        Delete
      </button>
    );
  return (
    <span className="confirm" role="group" aria-label={`Delete ${what}?`}>
      <span>Delete {what}?</span>
      <button
        className="danger-solid small"
        data-testid={testId && `${testId}-confirm`}
        disabled={busy}
        onClick={async () => {
          setBusy(true);
          try {
            await onConfirm();
          } finally {
            setBusy(false);
            setAsking(false);
          }
        }}
      >
        Yes, delete
      </button>
      <button className="small" onClick={() => setAsking(false)} disabled={busy}>
        Cancel
      </button>
    </span>
  );
}

/** The query of the hash (`#/executions?status=failed`), following its changes. */
export function useHashQuery(): URLSearchParams {
  const read = () => {
    const at = window.location.hash.indexOf("?");
    return at >= 0 ? window.location.hash.slice(at + 1) : "";
  };
  const [query, setQuery] = useState(read);
  useEffect(() => {
    const onChange = () => setQuery(read());
    window.addEventListener("hashchange", onChange);
    return () => window.removeEventListener("hashchange", onChange);
  }, []);
  return new URLSearchParams(query);
}

/** Go to path with these query parameters (empty ones left out), keeping the hash a link. */
export function navigateWithQuery(path: string, params: Record<string, string | number | null>) {
  const query = new URLSearchParams();
  for (const [name, value] of Object.entries(params)) {
    if (value !== null && value !== "" && !(name === "page" && Number(value) <= 1))
      query.set(name, String(value));
  }
  const text = query.toString();
  navigate(text ? `${path}?${text}` : path);
}

export function pageParam(query: URLSearchParams): number {
  const page = Number(query.get("page"));
  return Number.isInteger(page) && page >= 1 ? page : 1;
}

const WORKFLOW_PAGE = 200; // the gateway's largest page_size
const WORKFLOW_PAGES = 10;

/** Every workflow (up to a few thousand), for selects and for naming workflow ids. */
export function useAllWorkflows(): {
  workflows: Workflow[] | null;
  error: string | null;
  reload: () => void;
} {
  const [workflows, setWorkflows] = useState<Workflow[] | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [generation, setGeneration] = useState(0);
  useEffect(() => {
    let current = true;
    (async () => {
      try {
        const all: Workflow[] = [];
        for (let page = 1; page <= WORKFLOW_PAGES; page++) {
          const reply = await api<Page<Workflow>>(
            `/api/v1/workflows?page=${page}&page_size=${WORKFLOW_PAGE}`,
          );
          all.push(...reply.items);
          if (all.length >= reply.total || reply.items.length === 0) break;
        }
        all.sort((a, b) => a.name.localeCompare(b.name));
        if (current) {
          setWorkflows(all);
          setError(null);
        }
      } catch (caught) {
        if (current) setError(errorMessage(caught));
      }
    })();
    return () => {
      current = false;
    };
  }, [generation]);
  const reload = useCallback(() => setGeneration((n) => n + 1), []);
  return { workflows, error, reload };
}
