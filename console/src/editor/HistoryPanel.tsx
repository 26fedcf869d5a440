// A workflow's version history: who saved each version and when, what changed, a visual diff
// of any two versions node by node, and "Restore" (a rollback: a new version equal to the
// chosen one). GET/POST /api/v1/workflows/{id}/versions... (services/gateway/routes/versions.py).
import { useCallback, useEffect, useState } from "react";
import { api, type Page } from "../lib/api";
import "./History.css";

interface DiffSummary {
  nodes_added: string[];
  nodes_removed: string[];
  nodes_changed: string[];
  edges_added: number;
  edges_removed: number;
  fields_changed: string[];
  text: string;
}

interface VersionInfo {
  workflow_id: string;
  version: number;
  name: string;
  author: string | null;
  created_at: string | null;
  rollback_of: number | null;
  summary: DiffSummary;
}

interface NodeDiff {
  id: string;
  change: "added" | "removed" | "changed" | "same";
  before: Record<string, unknown> | null;
  after: Record<string, unknown> | null;
}

interface VersionDiff {
  from_version: number;
  to_version: number;
  summary: DiffSummary;
  nodes: NodeDiff[];
  edges: { change: "added" | "removed" | "same"; edge: { source: string; target: string; source_port?: string } }[];
  fields: Record<string, { before: unknown; after: unknown }>;
}

function when(iso: string | null): string {
  return iso ? new Date(iso).toLocaleString() : "";
}

/** The keys of a node whose values differ between two versions, with both values. */
function changedKeys(before: Record<string, unknown> | null, after: Record<string, unknown> | null) {
  const keys = new Set([...Object.keys(before ?? {}), ...Object.keys(after ?? {})]);
  return [...keys]
    .filter((key) => JSON.stringify(before?.[key]) !== JSON.stringify(after?.[key]))
    .map((key) => ({ key, before: before?.[key], after: after?.[key] }));
}

export function HistoryPanel({ workflowId, onClose }: { workflowId: string; onClose: () => void }) {
  const [versions, setVersions] = useState<VersionInfo[] | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [from, setFrom] = useState<number>(0);
  const [to, setTo] = useState<number>(0);
  const [diff, setDiff] = useState<VersionDiff | null>(null);
  const [restoring, setRestoring] = useState(false);

  useEffect(() => {
    let live = true;
    api<Page<VersionInfo>>(`/api/v1/workflows/${workflowId}/versions?page_size=100`)
      .then((page) => {
        if (!live) return;
        setVersions(page.items);
        const latest = page.items[0]?.version ?? 0;
        setTo(latest);
        setFrom(Math.max(latest - 1, 0));
      })
      .catch((err: Error) => live && setError(err.message));
    return () => {
      live = false;
    };
  }, [workflowId]);

  useEffect(() => {
    if (!to) return;
    let live = true;
    const against = from ? `?against=${from}` : "";
    api<VersionDiff>(`/api/v1/workflows/${workflowId}/versions/${to}/diff${against}`)
      .then((found) => live && setDiff(found))
      .catch((err: Error) => live && setError(err.message));
    return () => {
      live = false;
    };
  }, [workflowId, from, to]);

  const restore = useCallback(async () => {
    if (!to) return;
    setRestoring(true);
    try {
      await api(`/api/v1/workflows/${workflowId}/versions/${to}/rollback`, { method: "POST" });
      // The editor shows the latest version: load it again.
      window.location.reload();
    } catch (err) {
      setError((err as Error).message);
      setRestoring(false);
    }
  }, [workflowId, to]);

  const latest = versions?.[0]?.version ?? 0;
  return (
    <div className="ed-modal-backdrop" onMouseDown={(event) => event.target === event.currentTarget && onClose()}>
      <div className="ed-modal hist-modal" role="dialog" aria-modal="true" aria-label="Version history" data-testid="history-panel">
        <div className="ed-modal-head">
          <h2>Version history</h2>
          <button type="button" className="ed-icon-button" aria-label="Close" onClick={onClose}>
            ×
          </button>
        </div>
        {error && <p className="error" data-testid="history-error">{error}</p>}
        {!versions && !error && <p className="ed-muted">Loading versions…</p>}
        {versions && (
          <div className="hist-body">
            <ol className="hist-list" data-testid="history-list">
              {versions.map((info) => (
                <li
                  key={info.version}
                  className={`hist-item${info.version === to ? " selected" : ""}`}
                  data-testid={`history-version-${info.version}`}
                  onClick={() => {
                    setTo(info.version);
                    setFrom(Math.max(info.version - 1, 0));
                  }}
                >
                  <span className="hist-v">v{info.version}</span>
                  <span className="hist-meta">
                    {info.author ?? "unknown"} · {when(info.created_at)}
                    {info.rollback_of ? ` · restores v${info.rollback_of}` : ""}
                  </span>
                  <span className="hist-summary">{info.summary.text}</span>
                </li>
              ))}
            </ol>
            <div>
              <div className="hist-pickers">
                <label>
                  Compare{" "}
                  <select data-testid="history-from" value={from} onChange={(event) => setFrom(Number(event.target.value))}>
                    <option value={0}>(empty)</option>
                    {versions.map((info) => (
                      <option key={info.version} value={info.version}>
                        v{info.version}
                      </option>
                    ))}
                  </select>
                </label>
                <label>
                  with{" "}
                  <select data-testid="history-to" value={to} onChange={(event) => setTo(Number(event.target.value))}>
                    {versions.map((info) => (
                      <option key={info.version} value={info.version}>
                        v{info.version}
                      </option>
                    ))}
                  </select>
                </label>
                <button
                  type="button"
                  data-testid="history-restore"
                  disabled={restoring || !to || to === latest}
                  title={to === latest ? "This is the current version" : `Save a new version equal to v${to}`}
                  onClick={() => void restore()}
                >
                  {restoring ? "Restoring…" : `Restore v${to}`}
                </button>
              </div>
              {diff && (
                <div data-testid="history-diff">
                  <p data-testid="history-diff-summary">
                    v{diff.from_version || "∅"} → v{diff.to_version}: {diff.summary.text}
                  </p>
                  <div className="hist-diff-nodes">
                    {diff.nodes.map((node) => (
                      <div key={node.id} className={`hist-node ${node.change}`} data-testid={`history-node-${node.id}`} data-change={node.change}>
                        <div className="hist-node-head">
                          <strong>{node.id}</strong>
                          <span>{String((node.after ?? node.before)?.type ?? "")}</span>
                          <span className="hist-change">{node.change}</span>
                        </div>
                        {node.change === "changed" &&
                          changedKeys(node.before, node.after).map((item) => (
                            <div key={item.key}>
                              <span className="hist-change">{item.key}</span>
                              <pre className="hist-before">{JSON.stringify(item.before, null, 1)}</pre>
                              <pre className="hist-after">{JSON.stringify(item.after, null, 1)}</pre>
                            </div>
                          ))}
                      </div>
                    ))}
                  </div>
                  {diff.edges.some((edge) => edge.change !== "same") && (
                    <ul className="hist-edges" data-testid="history-edges">
                      {diff.edges
                        .filter((edge) => edge.change !== "same")
                        .map((edge, at) => (
                          <li key={at} className={edge.change}>
                            {edge.change === "added" ? "+" : "−"} {edge.edge.source}
                            {edge.edge.source_port ? `:${edge.edge.source_port}` : ""} → {edge.edge.target}
                          </li>
                        ))}
                    </ul>
                  )}
                </div>
              )}
            </div>
          </div>
        )}
      </div>
    </div>
  );
}

/** The toolbar button that opens the history (only for a saved workflow). */
export function HistoryButton({ workflowId }: { workflowId: string | null }) {
  const [open, setOpen] = useState(false);
  if (!workflowId) return null;
  return (
    <>
      <button type="button" data-testid="open-history" title="Versions: who changed what, diff, restore" onClick={() => setOpen(true)}>
        History
      </button>
      {open && <HistoryPanel workflowId={workflowId} onClose={() => setOpen(false)} />}
    </>
  );
}
