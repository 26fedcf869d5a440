// The side panel: the selected node's run (status, human input form, error, streamed text,
// output, inputs, timings, attempts), or the execution's summary when no node is selected.
import type { ReactNode } from "react";
import type { JsonSchema, NodeDef } from "../lib/types";
import { AgentSteps } from "./AgentSteps";
import { ArtifactRefs } from "./ArtifactView";
import type { ExecutionDetail, NodeRunDetail, NodeStream, StreamEvent } from "./executionState";
import { ForkDialog } from "./ForkDialog";
import { elapsedMs, formatDuration, formatTime, prettyJson } from "./format";
import { LoopIterations } from "./LoopIterations";
import { WaitingPanel } from "./WaitingPanel";

function Section({ title, children, aside }: { title: string; children: ReactNode; aside?: ReactNode }) {
  return (
    <section className="ev-section">
      <h3>
        {title}
        {aside && <span className="ev-section-aside">{aside}</span>}
      </h3>
      {children}
    </section>
  );
}

function Json({ value, testId }: { value: unknown; testId?: string }) {
  return (
    <pre className="ev-json" data-testid={testId}>
      {prettyJson(value)}
    </pre>
  );
}

export function StatusBadge({ status, testId }: { status: string; testId?: string }) {
  return (
    <span className={`ev-badge st-${status}`} data-testid={testId} data-status={status}>
      {status}
    </span>
  );
}

export function NodeDetail({
  executionId,
  nodeId,
  definition,
  run,
  stream,
  now,
  onClose,
  onSubmitted,
  stepEvents = [],
  waitingSince,
}: {
  executionId: string;
  nodeId: string;
  definition: NodeDef | undefined;
  run: NodeRunDetail | undefined;
  stream: NodeStream | undefined;
  now: number;
  onClose: () => void;
  onSubmitted: (detail: ExecutionDetail) => void;
  /** The node's agent.step events (an agent node's live steps). */
  stepEvents?: readonly StreamEvent[];
  /** When the node began to wait (its node.waiting event). */
  waitingSince?: string;
}) {
  const status = run?.status ?? "pending";
  const type = run?.type || definition?.type || "";
  const running = status === "running" || status === "retrying" || status === "waiting";
  const duration = run?.duration_ms ?? elapsedMs(run?.started_at, run?.finished_at, now);
  const history = run?.attempt_history ?? [];
  const hasOutput = run?.output !== undefined && run?.output !== null;
  const textNode = type === "llm" || type === "agent";
  const params = definition?.params ?? {};

  return (
    <div className="ev-detail" data-testid="node-detail" data-node={nodeId}>
      <div className="ev-detail-head">
        <div>
          <div className="ev-detail-title">{nodeId}</div>
          <div className="ev-muted">{type}</div>
        </div>
        <StatusBadge status={status} testId="node-status" />
        <button className="link ev-close" title="Close" aria-label="Close node details" onClick={onClose}>
          ×
        </button>
      </div>

      {status === "waiting" && (
        <WaitingPanel
          executionId={executionId}
          nodeId={nodeId}
          waiting={run?.waiting}
          waitingSince={waitingSince}
          attempt={run?.attempts ?? 0}
          fallbackSchema={params.schema as JsonSchema | undefined}
          now={now}
          onSubmitted={onSubmitted}
        />
      )}

      {run?.error && (
        <div className="ev-error" data-testid="node-error">
          <strong>{run.error.type}</strong>
          {run.error.retryable && <span className="ev-tag">retryable</span>}
          <div className="ev-error-message">{run.error.message}</div>
        </div>
      )}

      {(stream?.text || (textNode && running)) && (
        <Section title="Streamed text" aside={status === "running" ? <span className="ev-live-dot">live</span> : undefined}>
          <pre className="ev-stream" data-testid="node-stream">
            {stream?.text ?? ""}
            {status === "running" && <span className="ev-caret" />}
          </pre>
        </Section>
      )}

      {type === "agent" && (
        <AgentSteps run={run} events={stepEvents} executionId={status === "succeeded" ? executionId : undefined} />
      )}

      {(status === "succeeded" || status === "cached") && (
        <ForkDialog executionId={executionId} nodeId={nodeId} output={run?.output} />
      )}

      {hasOutput && (
        <Section title="Output">
          <Json value={run?.output} testId="node-output" />
          <ArtifactRefs value={run?.output} testId="node-output-artifacts" />
        </Section>
      )}

      {type === "loop" && <LoopIterations run={run} />}

      <Section title="Timings">
        <dl className="ev-dl">
          <dt>started</dt>
          <dd>{formatTime(run?.started_at)}</dd>
          <dt>finished</dt>
          <dd>{formatTime(run?.finished_at)}</dd>
          <dt>duration</dt>
          <dd>{formatDuration(duration)}</dd>
        </dl>
      </Section>

      <Section title="Attempts" aside={run?.attempts ? String(run.attempts) : undefined}>
        <div data-testid="node-attempts" className="ev-attempts">
          {history.length === 0 && <div className="ev-muted">{run?.attempts ? `${run.attempts} attempt(s)` : "Not run yet."}</div>}
          {history.map((attempt) => (
            <div key={attempt.attempt} className="ev-attempt" data-attempt={attempt.attempt}>
              <div className="ev-attempt-head">
                <span>#{attempt.attempt}</span>
                <StatusBadge status={attempt.status} />
                <span className="ev-muted">{formatTime(attempt.started_at)}</span>
                <span className="ev-muted">{formatDuration(elapsedMs(attempt.started_at, attempt.finished_at, now))}</span>
              </div>
              {attempt.error && (
                <div className="ev-attempt-error">
                  {attempt.error.type}: {attempt.error.message}
                </div>
              )}
            </div>
          ))}
        </div>
      </Section>

      {run?.inputs !== undefined && run?.inputs !== null && (
        <Section title="Inputs">
          <Json value={run.inputs} testId="node-inputs" />
          <ArtifactRefs value={run.inputs} testId="node-inputs-artifacts" />
        </Section>
      )}

      {definition && (
        <details className="ev-section ev-params">
          <summary>Definition</summary>
          <Json value={definition} />
        </details>
      )}
    </div>
  );
}

export function ExecutionSummary({ execution }: { execution: ExecutionDetail }) {
  return (
    <div className="ev-detail" data-testid="execution-summary">
      <div className="ev-detail-head">
        <div>
          <div className="ev-detail-title">Execution</div>
          <div className="ev-muted ev-mono">{execution.id}</div>
        </div>
      </div>
      <p className="ev-muted ev-hint">Select a node in the graph to see its run.</p>
      {execution.error && (
        <div className="ev-error" data-testid="execution-error">
          <strong>{execution.error.type}</strong>
          <div className="ev-error-message">{execution.error.message}</div>
        </div>
      )}
      {execution.outputs !== undefined && execution.outputs !== null && (
        <Section title="Outputs">
          <Json value={execution.outputs} testId="execution-outputs" />
          <ArtifactRefs value={execution.outputs} testId="execution-outputs-artifacts" />
        </Section>
      )}
      <Section title="Inputs">
        <Json value={execution.inputs ?? {}} testId="execution-inputs" />
        <ArtifactRefs value={execution.inputs} testId="execution-inputs-artifacts" />
      </Section>
      <Section title="Details">
        <dl className="ev-dl">
          <dt>trigger</dt>
          <dd>{execution.trigger || "—"}</dd>
          <dt>created</dt>
          <dd>{formatTime(execution.created_at)}</dd>
          {execution.retry_of && (
            <>
              <dt>retry of</dt>
              <dd>
                <a href={`#/executions/${execution.retry_of}`} className="ev-mono">
                  {execution.retry_of}
                </a>
              </dd>
            </>
          )}
          {execution.parent_execution_id && (
            <>
              <dt>parent</dt>
              <dd>
                <a href={`#/executions/${execution.parent_execution_id}`} className="ev-mono">
                  {execution.parent_execution_id}
                </a>
              </dd>
            </>
          )}
          {execution.idempotency_key && (
            <>
              <dt>idempotency key</dt>
              <dd className="ev-mono">{execution.idempotency_key}</dd>
            </>
          )}
          <dt>last event</dt>
          <dd>#{execution.last_seq}</dd>
        </dl>
      </Section>
    </div>
  );
}
