// A loop node's iterations (the node detail's `iterations`, the last 100, and
// `iterations_total`): index, status, attempt, duration, the error of a failed one, the output.
import { formatDuration, prettyJson } from "./format";
import "./artifacts.css";

export interface LoopIteration {
  index: number;
  status: string;
  attempt?: number | null;
  started_at?: string | null;
  duration_ms?: number | null;
  output?: unknown;
  output_truncated?: boolean;
  error?: { type: string; message: string } | null;
}

export function LoopIterations({ run }: { run: unknown }) {
  const loop = run as { iterations?: LoopIteration[] | null; iterations_total?: number | null } | undefined;
  const iterations = loop?.iterations;
  if (!iterations) return null;
  const total = loop?.iterations_total ?? iterations.length;
  return (
    <section className="ev-section" data-testid="loop-iterations" data-total={total}>
      <h3>
        Iterations
        <span className="ev-section-aside">{total}</span>
      </h3>
      {total > iterations.length && (
        <div className="ev-muted">
          The last {iterations.length} of {total}.
        </div>
      )}
      {iterations.length === 0 && <div className="ev-muted">No iteration has run yet.</div>}
      <ol className="li-list">
        {iterations.map((iteration, position) => (
          <li
            key={`${iteration.index}-${iteration.attempt ?? 0}-${position}`}
            className="li-row"
            data-testid="loop-iteration"
            data-index={iteration.index}
            data-status={iteration.status}
          >
            <div className="li-head">
              <span className="ev-mono">#{iteration.index}</span>
              <span className={`ev-badge st-${iteration.status}`}>{iteration.status}</span>
              <span className="ev-muted">{formatDuration(iteration.duration_ms)}</span>
              {iteration.attempt && iteration.attempt > 1 && <span className="ev-muted">attempt {iteration.attempt}</span>}
            </div>
            {iteration.error && (
              <div className="li-error" data-testid="loop-iteration-error">
                {iteration.error.type}: {iteration.error.message}
              </div>
            )}
            {iteration.status === "succeeded" &&
              (iteration.output_truncated ? (
                <div className="ev-muted">Output over 16 KB: see the node's output.</div>
              ) : (
                <details>
                  <summary>output</summary>
                  <pre className="ev-json" data-testid="loop-iteration-output">
                    {prettyJson(iteration.output)}
                  </pre>
                </details>
              ))}
          </li>
        ))}
      </ol>
    </section>
  );
}
