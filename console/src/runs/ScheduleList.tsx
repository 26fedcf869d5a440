// `#/schedules[?workflow_id=…]`: cron schedules with their next fire times, a form to create
// one (with a live preview of when it would fire), enable/disable, run now, delete.
import { useCallback, useEffect, useMemo, useRef, useState, type FormEvent } from "react";
import { ApiError, api, type Page } from "../lib/api";
import type { Schedule, Workflow } from "../lib/types";
import {
  ConfirmDelete,
  EmptyState,
  ErrorNote,
  Pager,
  RelativeTime,
  errorMessage,
  formatDateTime,
  formatRelative,
  navigateWithQuery,
  pageParam,
  shortId,
  useAllWorkflows,
  useHashQuery,
} from "./common";
import "./lists.css";

const PAGE_SIZE = 25;
const NEXT_FIRES = 3;
const PRESETS: [string, string][] = [
  ["Every 5 minutes", "*/5 * * * *"],
  ["Hourly", "0 * * * *"],
  ["Daily at 09:00", "0 9 * * *"],
  ["Weekdays at 09:00", "0 9 * * 1-5"],
  ["Mondays at 08:00", "0 8 * * 1"],
];

interface Preview {
  fire_times: string[];
}

export function ScheduleList() {
  const query = useHashQuery();
  const workflowId = query.get("workflow_id") ?? "";
  const page = pageParam(query);
  const { workflows, error: workflowsError } = useAllWorkflows();
  const byId = useMemo(() => new Map((workflows ?? []).map((w) => [w.id, w])), [workflows]);

  const [data, setData] = useState<Page<Schedule> | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [mustPickWorkflow, setMustPickWorkflow] = useState(false);
  const [notice, setNotice] = useState<string | null>(null);

  const load = useCallback(async () => {
    const params = new URLSearchParams({ page: String(page), page_size: String(PAGE_SIZE) });
    if (workflowId) params.set("workflow_id", workflowId);
    try {
      setData(await api<Page<Schedule>>(`/api/v1/schedules?${params}`));
      setError(null);
      setMustPickWorkflow(false);
    } catch (caught) {
      // Only a tenant admin lists every schedule; anyone else lists one workflow's.
      if (caught instanceof ApiError && caught.status === 403 && !workflowId) {
        setMustPickWorkflow(true);
        setData(null);
        setError(null);
      } else setError(errorMessage(caught));
    }
  }, [page, workflowId]);

  useEffect(() => {
    load();
  }, [load]);

  const act = async (what: string, action: () => Promise<unknown>, done?: string) => {
    setNotice(null);
    try {
      await action();
      if (done) setNotice(done);
    } catch (caught) {
      setError(`Could not ${what}: ${errorMessage(caught)}`);
      return;
    }
    await load();
  };

  // The form opens by itself while there is no schedule; otherwise on demand.
  const [formWanted, setFormWanted] = useState(false);
  const formOpen = formWanted || (data !== null && data.total === 0 && !workflowId);

  return (
    <div className="page">
      <header className="page-header">
        <div>
          <h1>Schedules</h1>
          <p className="muted">
            Cron schedules that start workflows. Times are shown in your time zone ({BROWSER_ZONE}).
          </p>
        </div>
        {!formOpen && (
          <button className="primary" data-testid="new-schedule" onClick={() => setFormWanted(true)}>
            + New schedule
          </button>
        )}
      </header>

      {formOpen && (
        <ScheduleForm
          workflows={workflows}
          defaultWorkflowId={workflowId}
          onCancel={data !== null && data.total > 0 ? () => setFormWanted(false) : undefined}
          onCreated={async (schedule) => {
            const name = byId.get(schedule.workflow_id)?.name ?? "the workflow";
            setNotice(`Schedule created: ${name} runs on “${schedule.cron}” (${schedule.timezone}).`);
            setFormWanted(false);
            await load();
          }}
        />
      )}

      <div className="toolbar" role="search">
        <label>
          Workflow
          <select
            data-testid="schedule-filter-workflow"
            value={workflowId}
            onChange={(event) => navigateWithQuery("/schedules", { workflow_id: event.target.value })}
          >
            <option value="">All workflows</option>
            {(workflows ?? []).map((workflow) => (
              <option key={workflow.id} value={workflow.id}>
                {workflow.name}
              </option>
            ))}
          </select>
        </label>
        {data && (
          <span className="muted count">
            {data.total} {data.total === 1 ? "schedule" : "schedules"}
          </span>
        )}
      </div>

      <ErrorNote error={workflowsError && `Workflows could not be loaded: ${workflowsError}`} />
      <ErrorNote error={error} onRetry={load} />
      {notice && (
        <div className="note ok-note" role="status" data-testid="schedule-notice">
          {notice}
        </div>
      )}

      {mustPickWorkflow ? (
        <EmptyState title="Pick a workflow">
          <p>Your API key may list the schedules of one workflow at a time: choose it above.</p>
        </EmptyState>
      ) : data === null ? (
        !error && <p className="muted loading">Loading schedules…</p>
      ) : data.items.length === 0 ? (
        page > 1 ? (
          <EmptyState title={`Page ${page} is empty`}>
            <button onClick={() => navigateWithQuery("/schedules", { workflow_id: workflowId })}>
              Go to the first page
            </button>
          </EmptyState>
        ) : (
          <EmptyState title={workflowId ? "This workflow has no schedules" : "No schedules yet"}>
            <p>
              Create one with <strong>New schedule</strong>: pick a workflow and a cron expression
              such as <code>0 9 * * 1-5</code> (weekdays at 09:00); the preview shows when it
              will fire.
            </p>
          </EmptyState>
        )
      ) : (
        <>
          <div className="table-wrap">
            <table className="data schedules" data-testid="schedule-list">
              <thead>
                <tr>
                  <th>Workflow</th>
                  <th>Cron</th>
                  <th>Next fire times</th>
                  <th>Last fired</th>
                  <th>Enabled</th>
                  <th className="actions-col">
                    <span className="sr-only">Actions</span>
                  </th>
                </tr>
              </thead>
              <tbody>
                {data.items.map((schedule) => (
                  <ScheduleRow
                    key={schedule.id}
                    schedule={schedule}
                    workflow={byId.get(schedule.workflow_id)}
                    onToggle={() =>
                      act(schedule.enabled ? "disable the schedule" : "enable the schedule", () =>
                        api(`/api/v1/schedules/${schedule.id}`, {
                          method: "PUT",
                          body: { ...specOf(schedule), enabled: !schedule.enabled },
                        }),
                      )
                    }
                    onRunNow={() =>
                      act(
                        "run the schedule",
                        () => api(`/api/v1/schedules/${schedule.id}/trigger`, { method: "POST" }),
                        "Fired: the execution appears under Executions in a moment.",
                      )
                    }
                    onDelete={() =>
                      act("delete the schedule", () =>
                        api(`/api/v1/schedules/${schedule.id}`, { method: "DELETE" }),
                      )
                    }
                  />
                ))}
              </tbody>
            </table>
          </div>
          <Pager
            page={page}
            pageSize={PAGE_SIZE}
            total={data.total}
            onPage={(next) => navigateWithQuery("/schedules", { workflow_id: workflowId, page: next })}
          />
        </>
      )}
    </div>
  );
}

/** What PUT takes back: the schedule's spec (ScheduleIn refuses unknown fields). */
function specOf(schedule: Schedule) {
  return {
    workflow_id: schedule.workflow_id,
    cron: schedule.cron,
    timezone: schedule.timezone,
    inputs: schedule.inputs ?? {},
    enabled: schedule.enabled,
    misfire_policy: schedule.misfire_policy,
    misfire_limit: schedule.misfire_limit,
    start_at: schedule.start_at ?? null,
    end_at: schedule.end_at ?? null,
    name: schedule.name,
  };
}

function ScheduleRow({
  schedule,
  workflow,
  onToggle,
  onRunNow,
  onDelete,
}: {
  schedule: Schedule;
  workflow: Workflow | undefined;
  onToggle: () => Promise<void>;
  onRunNow: () => Promise<void>;
  onDelete: () => Promise<void>;
}) {
  const [busy, setBusy] = useState(false);
  const fires = useNextFires(schedule);
  const run = (action: () => Promise<void>) => async () => {
    setBusy(true);
    try {
      await action();
    } finally {
      setBusy(false);
    }
  };
  return (
    <tr data-testid={`schedule-row-${schedule.id}`} className={schedule.enabled ? "" : "disabled-row"}>
      <td>
        {workflow ? (
          <a className="row-title" href={`#/workflows/${workflow.id}`}>
            {workflow.name}
          </a>
        ) : (
          <span className="muted mono" title={schedule.workflow_id}>
            {shortId(schedule.workflow_id)}
          </span>
        )}
        {schedule.name && <div className="muted">{schedule.name}</div>}
      </td>
      <td>
        <code className="cron">{schedule.cron}</code>
        <div className="muted">{schedule.timezone}</div>
      </td>
      <td data-testid={`schedule-next-${schedule.id}`}>
        {!schedule.enabled ? (
          <span className="muted">— disabled</span>
        ) : fires === null ? (
          <span className="muted">…</span>
        ) : fires.length === 0 ? (
          <span className="muted">none (ended)</span>
        ) : (
          <ol className="fire-times">
            {fires.map((fire, index) => (
              <li key={fire} data-testid="fire-time">
                <time dateTime={fire}>{formatDateTime(fire)}</time>
                {index === 0 && <span className="muted"> · {formatRelative(fire)}</span>}
              </li>
            ))}
          </ol>
        )}
      </td>
      <td>
        <RelativeTime value={schedule.last_fire_at} />
      </td>
      <td>
        <label className="switch" title={schedule.enabled ? "Disable" : "Enable"}>
          <input
            type="checkbox"
            role="switch"
            checked={schedule.enabled}
            disabled={busy}
            data-testid={`schedule-enabled-${schedule.id}`}
            onChange={run(onToggle)}
          />
          <span>{schedule.enabled ? "On" : "Off"}</span>
        </label>
      </td>
      <td className="actions">
        <button className="small" disabled={busy} onClick={run(onRunNow)} data-testid={`schedule-run-${schedule.id}`}>
          Run now
        </button>
        <ConfirmDelete what="this schedule" testId={`schedule-delete-${schedule.id}`} onConfirm={onDelete} />
      </td>
    </tr>
  );
}

/** The schedule's next fire times: the scheduler's next_fire_at and the ones after it. */
function useNextFires(schedule: Schedule): string[] | null {
  const [fires, setFires] = useState<string[] | null>(null);
  const { enabled, next_fire_at: next, cron, timezone, end_at: end } = schedule;
  useEffect(() => {
    if (!enabled || !next) {
      setFires(next ? [next] : []);
      return;
    }
    let current = true;
    const params = new URLSearchParams({ cron, timezone, count: String(NEXT_FIRES - 1), after: next });
    api<Preview>(`/api/v1/schedules/preview?${params}`)
      .then((preview) => {
        const later = preview.fire_times.filter((fire) => !end || new Date(fire) <= new Date(end));
        if (current) setFires([next, ...later]);
      })
      .catch(() => current && setFires([next]));
    return () => {
      current = false;
    };
  }, [enabled, next, cron, timezone, end]);
  return fires;
}

const BROWSER_ZONE = Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";
const ZONES = ["UTC", ...Intl.supportedValuesOf("timeZone").filter((zone) => zone !== "UTC")];

/** Worth asking the server about: 5 or 6 fields (or an @alias) of cron characters. */
function plausibleCron(cron: string): boolean {
  const fields = cron.trim().split(/\s+/);
  if (fields.length === 1 && /^@[a-z]+$/i.test(fields[0])) return true;
  return (fields.length === 5 || fields.length === 6) && fields.every((f) => /^[\w*/,?#-]+$/.test(f));
}

function knownZone(zone: string): boolean {
  try {
    new Intl.DateTimeFormat(undefined, { timeZone: zone });
    return true;
  } catch {
    return false;
  }
}

function ScheduleForm({
  workflows,
  defaultWorkflowId,
  onCreated,
  onCancel,
}: {
  workflows: Workflow[] | null;
  defaultWorkflowId: string;
  onCreated: (schedule: Schedule) => Promise<void>;
  onCancel?: () => void;
}) {
  const [workflowId, setWorkflowId] = useState(defaultWorkflowId);
  const [cron, setCron] = useState("");
  const [timezone, setTimezone] = useState(BROWSER_ZONE);
  const [name, setName] = useState("");
  const [inputs, setInputs] = useState("{}");
  const [enabled, setEnabled] = useState(true);
  const [submitting, setSubmitting] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const preview = useCronPreview(cron, timezone);

  useEffect(() => {
    if (defaultWorkflowId) setWorkflowId(defaultWorkflowId);
  }, [defaultWorkflowId]);

  let inputsProblem: string | null = null;
  try {
    const parsed: unknown = JSON.parse(inputs || "{}");
    if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed))
      inputsProblem = "Inputs must be a JSON object, e.g. {\"city\": \"Oslo\"}.";
  } catch (caught) {
    inputsProblem = `Inputs are not valid JSON: ${(caught as Error).message}`;
  }

  const submit = async (event: FormEvent) => {
    event.preventDefault();
    if (inputsProblem) return setError(inputsProblem);
    setSubmitting(true);
    setError(null);
    try {
      const created = await api<Schedule>("/api/v1/schedules", {
        method: "POST",
        body: {
          workflow_id: workflowId,
          cron: cron.trim(),
          timezone: timezone.trim() || "UTC",
          inputs: JSON.parse(inputs || "{}"),
          enabled,
          name: name.trim(),
        },
      });
      setCron("");
      setName("");
      await onCreated(created);
    } catch (caught) {
      setError(errorMessage(caught));
    } finally {
      setSubmitting(false);
    }
  };

  const noWorkflows = workflows !== null && workflows.length === 0;
  return (
    <form className="card schedule-form" data-testid="schedule-form" onSubmit={submit}>
      <h2>New schedule</h2>
      {noWorkflows ? (
        <p className="muted">
          There is no workflow to schedule yet: <a href="#/workflows/new">create one</a> first.
        </p>
      ) : (
        <div className="form-grid">
          <label>
            Workflow
            <select
              data-testid="schedule-workflow"
              required
              value={workflowId}
              onChange={(event) => setWorkflowId(event.target.value)}
            >
              <option value="" disabled>
                {workflows === null ? "Loading…" : "Choose a workflow"}
              </option>
              {(workflows ?? []).map((workflow) => (
                <option key={workflow.id} value={workflow.id}>
                  {workflow.name}
                </option>
              ))}
            </select>
          </label>
          <label>
            Cron
            <input
              data-testid="schedule-cron"
              className="mono"
              required
              placeholder="min hour day month weekday"
              value={cron}
              onChange={(event) => setCron(event.target.value)}
              aria-describedby="cron-help"
            />
          </label>
          <label>
            Time zone
            <input
              data-testid="schedule-timezone"
              list="time-zones"
              value={timezone}
              onChange={(event) => setTimezone(event.target.value)}
            />
            <datalist id="time-zones">
              {ZONES.map((zone) => (
                <option key={zone} value={zone} />
              ))}
            </datalist>
          </label>
          <label>
            <span>
              Name <span className="muted">(optional)</span>
            </span>
            <input
              data-testid="schedule-name"
              value={name}
              placeholder="nightly report"
              onChange={(event) => setName(event.target.value)}
            />
          </label>
          <div className="presets" id="cron-help">
            <span className="muted">Presets:</span>
            {PRESETS.map(([label, expression]) => (
              <button type="button" className="chip" key={expression} onClick={() => setCron(expression)}>
                {label}
              </button>
            ))}
            <span className="muted">5 fields (minute hour day month weekday), or 6 with seconds first.</span>
          </div>
          <label className="inputs-field">
            <span>
              Inputs <span className="muted">(JSON object, given to every run)</span>
            </span>
            <textarea
              data-testid="schedule-inputs"
              className="mono"
              rows={3}
              value={inputs}
              onChange={(event) => setInputs(event.target.value)}
              aria-invalid={inputsProblem !== null}
            />
            {inputsProblem && <span className="field-error">{inputsProblem}</span>}
          </label>
          <div className="preview" data-testid="schedule-preview" aria-live="polite">
            <span className="preview-title">Would fire at</span>
            {preview.kind === "idle" && <span className="muted">Enter a cron expression.</span>}
            {preview.kind === "invalid" && <span className="field-error">{preview.message}</span>}
            {preview.kind === "times" && (
              <ol className="fire-times">
                {preview.times.map((fire) => (
                  <li key={fire}>
                    <time dateTime={fire}>{formatDateTime(fire)}</time>
                  </li>
                ))}
              </ol>
            )}
          </div>
          <div className="form-actions">
            <label className="checkbox">
              <input type="checkbox" checked={enabled} onChange={(event) => setEnabled(event.target.checked)} />
              Enabled
            </label>
            {onCancel && (
              <button type="button" onClick={onCancel}>
                Cancel
              </button>
            )}
            <button
              type="submit"
              className="primary"
              data-testid="schedule-submit"
              disabled={submitting || !workflowId || !cron.trim()}
            >
              {submitting ? "Creating…" : "Create schedule"}
            </button>
          </div>
        </div>
      )}
      {error && (
        <p className="field-error" role="alert" data-testid="schedule-error">
          {error}
        </p>
      )}
    </form>
  );
}

type CronPreview =
  | { kind: "idle" }
  | { kind: "invalid"; message: string }
  | { kind: "times"; times: string[] };

/** The next fire times of what is typed, asked of the server a moment after typing stops. */
function useCronPreview(cron: string, timezone: string): CronPreview {
  const [preview, setPreview] = useState<CronPreview>({ kind: "idle" });
  const latest = useRef(0);
  useEffect(() => {
    const request = ++latest.current;
    const expression = cron.trim();
    const zone = timezone.trim() || "UTC";
    if (!expression) return setPreview({ kind: "idle" });
    // Checked here first, so that typing does not fire requests the server must refuse.
    if (!plausibleCron(expression))
      return setPreview({
        kind: "invalid",
        message: "Not a cron expression yet: 5 fields (or 6 with seconds first), e.g. 0 9 * * 1-5.",
      });
    if (!knownZone(zone))
      return setPreview({ kind: "invalid", message: `Unknown time zone “${zone}”.` });
    const timer = window.setTimeout(async () => {
      const params = new URLSearchParams({ cron: expression, timezone: zone, count: "5" });
      try {
        const reply = await api<Preview>(`/api/v1/schedules/preview?${params}`);
        if (request === latest.current) setPreview({ kind: "times", times: reply.fire_times });
      } catch (caught) {
        if (request === latest.current) setPreview({ kind: "invalid", message: errorMessage(caught) });
      }
    }, 250);
    return () => window.clearTimeout(timer);
  }, [cron, timezone]);
  return preview;
}
