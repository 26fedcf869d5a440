// Start an execution: a form built from the workflow's declared `inputs`.
import { useEffect, useMemo, useState, type FormEvent } from "react";
import { ApiError, api } from "../lib/api";
import { navigate } from "../lib/router";
import type { Workflow } from "../lib/types";
import { FileInput } from "./FileInput";
import { FieldInput, collect, fieldsFromInputs, initialRaw, problemField, useFieldValues } from "./schemaForm";
import "./runs.css";

interface Started {
  execution_id: string;
  status: string;
  created: boolean;
}

export function RunPage({ workflowId }: { workflowId: string }) {
  const [workflow, setWorkflow] = useState<Workflow | null>(null);
  const [loadError, setLoadError] = useState<string | null>(null);
  const { raw, errors, setErrors, edit } = useFieldValues();
  const [formError, setFormError] = useState<string | null>(null);
  const [idempotencyKey, setIdempotencyKey] = useState("");
  const [submitting, setSubmitting] = useState(false);

  useEffect(() => {
    let live = true;
    api<Workflow>(`/api/v1/workflows/${encodeURIComponent(workflowId)}`)
      .then((found) => live && setWorkflow(found))
      .catch((error: Error) => live && setLoadError(error.message));
    return () => {
      live = false;
    };
  }, [workflowId]);

  const fields = useMemo(() => fieldsFromInputs(workflow?.definition?.inputs), [workflow]);

  if (loadError) {
    return (
      <div className="rp-page">
        <p className="error" data-testid="run-load-error">
          Could not load workflow {workflowId}: {loadError}
        </p>
        <a href="#/workflows">Back to workflows</a>
      </div>
    );
  }
  if (!workflow) return <div className="rp-page ev-muted">Loading workflow…</div>;

  const submit = async (event: FormEvent) => {
    event.preventDefault();
    const { value, errors: problems } = collect(fields, raw);
    setErrors(problems);
    setFormError(null);
    if (Object.keys(problems).length > 0) return;
    setSubmitting(true);
    try {
      const body: Record<string, unknown> = { inputs: value };
      if (idempotencyKey.trim()) body.idempotency_key = idempotencyKey.trim();
      const started = await api<Started>(`/api/v1/workflows/${encodeURIComponent(workflowId)}/execute`, {
        method: "POST",
        body,
      });
      navigate(`/executions/${started.execution_id}`);
    } catch (error) {
      setSubmitting(false);
      if (error instanceof ApiError && Array.isArray(error.details)) {
        const located: Record<string, string> = {};
        const unlocated: string[] = [];
        for (const problem of error.details as { field?: unknown; message?: string }[]) {
          const name = problemField(problem.field, "inputs");
          if (name) located[name] = problem.message ?? "Invalid.";
          else unlocated.push(problem.message ?? String(problem.field ?? ""));
        }
        setErrors(located);
        setFormError([error.message, ...unlocated].join(" "));
      } else {
        setFormError(error instanceof Error ? error.message : String(error));
      }
    }
  };

  return (
    <div className="rp-page">
      <div className="rp-head">
        <div>
          <div className="rp-crumbs">
            <a href="#/workflows">Workflows</a> / <a href={`#/workflows/${workflowId}`}>{workflow.name}</a>
          </div>
          <h1>
            Run {workflow.name} <span className="ev-muted">v{workflow.version}</span>
          </h1>
          {workflow.description && <p className="ev-muted">{workflow.description}</p>}
        </div>
      </div>
      <form className="rp-form" data-testid="run-form" onSubmit={submit} noValidate>
        <h2>Inputs</h2>
        {fields.length === 0 && <p className="ev-muted">This workflow takes no inputs.</p>}
        {fields.map((field) => {
          const Input = workflow.definition?.inputs?.[field.name]?.type === "file" ? FileInput : FieldInput;
          return (
            <Input
              key={field.name}
              field={field}
              value={raw[field.name] ?? initialRaw(field)}
              error={errors[field.name]}
              testId={`run-input-${field.name}`}
              onChange={(next) => edit(field.name, next)}
            />
          );
        })}
        <details className="rp-advanced">
          <summary>Options</summary>
          <div className="rf-field">
            <label htmlFor="run-idempotency-key" className="rf-label">
              <span className="rf-name">Idempotency key</span>
              <span className="rf-kind">optional</span>
            </label>
            <input
              id="run-idempotency-key"
              data-testid="run-idempotency-key"
              value={idempotencyKey}
              placeholder="same key, same execution"
              onChange={(event) => setIdempotencyKey(event.target.value)}
            />
          </div>
        </details>
        {formError && (
          <p className="error" data-testid="run-error">
            {formError}
          </p>
        )}
        <div className="rp-actions">
          <button type="submit" className="primary" data-testid="run-submit" disabled={submitting}>
            {submitting ? "Starting…" : "Start execution"}
          </button>
          <a href={`#/executions?workflow_id=${encodeURIComponent(workflowId)}`}>Past executions</a>
        </div>
      </form>
    </div>
  );
}
