// The bottom panels of the execution view: the execution's logs (filtered by node and level,
// refreshed as events arrive) and the events received on the stream.
import { useEffect, useRef, useState } from "react";
import { api } from "../lib/api";
import type { StreamEvent } from "./executionState";
import { formatTime } from "./format";

interface LogRecord {
  ts?: string | null;
  level: string;
  message: string;
  node_id?: string | null;
  attempt?: number | null;
  logger?: string | null;
  service?: string | null;
  fields?: unknown;
}

interface LogPage {
  records: LogRecord[];
  next_page_token: string | null;
}

const LEVELS = ["debug", "info", "warning", "error"];
const PAGE_SIZE = 200;

export function LogsPanel({
  executionId,
  nodeIds,
  refreshKey,
  selectedNode,
}: {
  executionId: string;
  nodeIds: string[];
  /** Changes whenever the logs may have grown (new events). */
  refreshKey: number;
  selectedNode: string | null;
}) {
  const [nodeFilter, setNodeFilter] = useState("");
  const [level, setLevel] = useState("");
  const [records, setRecords] = useState<LogRecord[]>([]);
  const [next, setNext] = useState<string | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [loaded, setLoaded] = useState(false);
  const request = useRef(0);
  const lastQuery = useRef(0);

  const query = (token?: string) => {
    const params = new URLSearchParams({ page_size: String(PAGE_SIZE) });
    if (nodeFilter) params.set("node_id", nodeFilter);
    if (level) params.set("level", level);
    if (token) params.set("page_token", token);
    return api<LogPage>(`/api/v1/executions/${encodeURIComponent(executionId)}/logs?${params}`);
  };

  useEffect(() => {
    const mine = ++request.current;
    // Events come in bursts: at most one query a second while they keep coming (a pure
    // debounce would never load during a busy run); the first one at once.
    const wait = lastQuery.current ? Math.max(150, lastQuery.current + 1000 - Date.now()) : 0;
    const timer = setTimeout(() => {
      lastQuery.current = Date.now();
      query()
        .then((page) => {
          if (mine !== request.current) return;
          setRecords(page.records);
          setNext(page.next_page_token);
          setError(null);
          setLoaded(true);
        })
        .catch((failure: Error) => mine === request.current && setError(failure.message));
    }, wait);
    return () => clearTimeout(timer);
  }, [executionId, nodeFilter, level, refreshKey]);

  const more = async () => {
    if (!next) return;
    const mine = request.current;
    try {
      const page = await query(next);
      if (mine !== request.current) return;
      setRecords((previous) => previous.concat(page.records));
      setNext(page.next_page_token);
    } catch (failure) {
      setError((failure as Error).message);
    }
  };

  return (
    <section className="ev-panel" data-testid="logs-panel">
      <div className="ev-panel-head">
        <h3>Logs</h3>
        <select
          data-testid="logs-node"
          value={nodeFilter}
          onChange={(event) => setNodeFilter(event.target.value)}
          aria-label="Filter logs by node"
        >
          <option value="">all nodes</option>
          {nodeIds.map((id) => (
            <option key={id} value={id}>
              {id}
            </option>
          ))}
        </select>
        <select
          data-testid="logs-level"
          value={level}
          onChange={(event) => setLevel(event.target.value)}
          aria-label="Minimum level"
        >
          <option value="">any level</option>
          {LEVELS.map((name) => (
            <option key={name} value={name}>
              ≥ {name}
            </option>
          ))}
        </select>
        {selectedNode && selectedNode !== nodeFilter && (
          <button className="link ev-small" onClick={() => setNodeFilter(selectedNode)}>
            only {selectedNode}
          </button>
        )}
        <span className="ev-panel-count ev-muted">
          {records.length} {records.length === 1 ? "record" : "records"}
        </span>
      </div>
      <div className="ev-panel-body">
        {error && <div className="error">Logs unavailable: {error}</div>}
        {!loaded && !error && <div className="ev-muted ev-empty">Loading logs…</div>}
        {loaded && records.length === 0 && !error && <div className="ev-muted ev-empty">No log records.</div>}
        <table className="ev-logs">
          <tbody>
            {records.map((record, index) => (
              <tr key={index} className={`lv-${record.level}`} data-testid="log-record">
                <td className="ev-ts">{formatTime(record.ts)}</td>
                <td className="ev-level">{record.level}</td>
                <td className="ev-lnode">{record.node_id ?? record.service ?? ""}</td>
                <td className="ev-msg">
                  {record.message}
                  {record.fields && typeof record.fields === "object" && Object.keys(record.fields).length > 0 ? (
                    <span className="ev-fields"> {JSON.stringify(record.fields)}</span>
                  ) : null}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
        {next && (
          <button className="link ev-small" onClick={more}>
            Load more
          </button>
        )}
      </div>
    </section>
  );
}

function summarize(event: StreamEvent): string {
  const data = event.data ?? {};
  switch (event.type) {
    case "node.text_chunk":
      return JSON.stringify(String(data.delta ?? ""));
    case "node.failed":
    case "node.retrying": {
      const error = data.error as { type?: string; message?: string } | undefined;
      return error ? `${error.type}: ${error.message}` : "";
    }
    case "node.completed":
      return typeof data.duration_ms === "number" ? `${data.status} in ${Math.round(data.duration_ms)} ms` : String(data.status ?? "");
    case "node.skipped":
      return String(data.reason ?? "");
    case "node.waiting":
      return String(data.prompt ?? "");
    case "log":
      return `${data.level ?? ""} ${data.message ?? ""}`;
    case "execution.failed": {
      const error = data.error as { message?: string } | undefined;
      return error?.message ?? "";
    }
    default:
      return typeof data.attempt === "number" ? `attempt ${data.attempt}` : "";
  }
}

const SHOWN = 400;

export function EventsPanel({ events }: { events: readonly StreamEvent[] }) {
  const [chunks, setChunks] = useState(true);
  const shown = (chunks ? events : events.filter((event) => event.type !== "node.text_chunk")).slice(-SHOWN).reverse();
  return (
    <section className="ev-panel" data-testid="events-panel">
      <div className="ev-panel-head">
        <h3>Events</h3>
        <label className="ev-small">
          <input type="checkbox" checked={chunks} onChange={(event) => setChunks(event.target.checked)} /> text chunks
        </label>
        <span className="ev-panel-count ev-muted">{events.length} received</span>
      </div>
      <div className="ev-panel-body">
        {events.length === 0 && <div className="ev-muted ev-empty">Waiting for events…</div>}
        <table className="ev-events">
          <tbody>
            {shown.map((event) => (
              <tr key={event.seq} data-testid="event-row" data-seq={event.seq} className={`ev-t-${event.type.replace(/\./g, "-")}`}>
                <td className="ev-seq">#{event.seq}</td>
                <td className="ev-ts">{formatTime(event.ts)}</td>
                <td className="ev-type">{event.type}</td>
                <td className="ev-lnode">{event.node_id ?? ""}</td>
                <td className="ev-msg" title={summarize(event)}>
                  {summarize(event)}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
    </section>
  );
}
