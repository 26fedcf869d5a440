// What a waiting node waits for: an agent's tool call to approve (ApprovalPanel), a timer of
// the workflow service (a delay of HEDDLE_DELAY_TIMER_MIN_S or more: `waiting.delay`, due
// `timeout_s` after the node began to wait), or a person's input (HumanInputForm).
import type { JsonSchema } from "../lib/types";
import { ApprovalPanel, approvalOf } from "./ApprovalPanel";
import type { ExecutionDetail, Waiting } from "./executionState";
import { formatDuration, formatTime } from "./format";
import { HumanInputForm } from "./HumanInputForm";
import "./agentRuns.css";

/** The timer a waiting delay node sleeps on, if its `waiting` is one. */
export function timerOf(waiting: Waiting | null | undefined): { seconds: number; timeout_s: number } | null {
  const delay = waiting?.delay as { seconds?: unknown } | undefined;
  if (!delay || typeof delay !== "object") return null;
  const seconds = Number(delay.seconds ?? 0);
  return { seconds, timeout_s: Number(waiting?.timeout_s ?? seconds) };
}

/** When the timer is due: as the workflow service arms it (the wait's start + timeout_s). */
export function resumesAt(waiting: Waiting | null | undefined, since: string | undefined): number | null {
  const timer = timerOf(waiting);
  const start = since ? Date.parse(since) : NaN;
  if (!timer || !Number.isFinite(start)) return null;
  return start + timer.timeout_s * 1000;
}

export function WaitingPanel({
  executionId,
  nodeId,
  waiting,
  waitingSince,
  attempt,
  fallbackSchema,
  now,
  onSubmitted,
}: {
  executionId: string;
  nodeId: string;
  waiting: Waiting | null | undefined;
  waitingSince: string | undefined;
  attempt: number;
  fallbackSchema: JsonSchema | undefined;
  now: number;
  onSubmitted: (detail: ExecutionDetail) => void;
}) {
  const approval = approvalOf(waiting);
  if (approval) {
    return (
      <ApprovalPanel
        key={`${nodeId}/${attempt}/${approval.key ?? ""}`}
        executionId={executionId}
        nodeId={nodeId}
        approval={approval}
        onSubmitted={onSubmitted}
      />
    );
  }
  const timer = timerOf(waiting);
  if (timer) {
    const due = resumesAt(waiting, waitingSince);
    return (
      <div className="ar-timer" data-testid="timer-waiting">
        <div className="ev-human-title">Waiting on a timer</div>
        <p>
          A delay of {formatDuration(timer.seconds * 1000)}, kept by the workflow service (no node slot is held).
        </p>
        <dl className="ev-dl">
          <dt>resumes at</dt>
          <dd data-testid="timer-resumes-at" data-at={due === null ? "" : new Date(due).toISOString()}>
            {due === null ? "—" : formatTime(new Date(due).toISOString())}
          </dd>
          <dt>in</dt>
          <dd data-testid="timer-remaining">{due === null ? "—" : formatDuration(Math.max(0, due - now))}</dd>
        </dl>
      </div>
    );
  }
  return (
    <HumanInputForm
      key={`${nodeId}/${attempt}`}
      executionId={executionId}
      nodeId={nodeId}
      waiting={waiting}
      fallbackSchema={fallbackSchema}
      onSubmitted={onSubmitted}
    />
  );
}
