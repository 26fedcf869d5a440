// The form of a waiting human_input node, generated from its JSON Schema: one field per
// property of a flat object schema, else a JSON editor. Checked here first, so that the
// normal path never meets a 422; the server's located problems are shown inline otherwise.
import { useMemo, useState, type FormEvent } from "react";
import { ApiError, api } from "../lib/api";
import type { JsonSchema } from "../lib/types";
import type { ExecutionDetail, Waiting } from "./executionState";
import { prettyJson } from "./format";
import {
  FieldInput,
  collect,
  fieldsFromSchema,
  initialRaw,
  problemField,
  useFieldValues,
  validateSchema,
} from "./schemaForm";

export function HumanInputForm({
  executionId,
  nodeId,
  waiting,
  fallbackSchema,
  onSubmitted,
}: {
  executionId: string;
  nodeId: string;
  waiting: Waiting | null | undefined;
  fallbackSchema: JsonSchema | undefined;
  onSubmitted: (detail: ExecutionDetail) => void;
}) {
  const schema: JsonSchema = waiting?.schema ?? fallbackSchema ?? { type: "object" };
  const fields = useMemo(() => fieldsFromSchema(schema), [schema]);
  const [json, setJson] = useState(() => prettyJson(schema.default ?? (schema.type === "object" ? {} : null)));
  const { raw, errors, setErrors, edit } = useFieldValues();
  const [formError, setFormError] = useState<string | null>(null);
  const [sending, setSending] = useState(false);
  const [sent, setSent] = useState(false);

  const submit = async (event: FormEvent) => {
    event.preventDefault();
    setFormError(null);
    let data: unknown;
    const problems: Record<string, string> = {};
    if (fields) {
      const collected = collect(fields, raw);
      Object.assign(problems, collected.errors);
      data = collected.value;
    } else {
      try {
        data = JSON.parse(json);
      } catch (error) {
        problems.json = `Invalid JSON: ${(error as Error).message}`;
      }
    }
    if (Object.keys(problems).length === 0) {
      for (const problem of validateSchema(schema, data)) {
        const key = fields ? (problem.path[0] ?? "") : "json";
        const where = fields || problem.path.length === 0 ? "" : `/${problem.path.join("/")}: `;
        if (!problems[key]) problems[key] = where + problem.message;
      }
    }
    setErrors(problems);
    if (Object.keys(problems).length > 0) {
      if (problems[""]) setFormError(problems[""]);
      return;
    }
    setSending(true);
    try {
      const detail = await api<ExecutionDetail>(`/api/v1/executions/${encodeURIComponent(executionId)}/input`, {
        method: "POST",
        body: { node_id: nodeId, data },
      });
      setSent(true);
      onSubmitted(detail);
    } catch (error) {
      if (error instanceof ApiError && Array.isArray(error.details)) {
        const located: Record<string, string> = {};
        const rest: string[] = [];
        for (const problem of error.details as { field?: unknown; message?: string }[]) {
          const name = fields ? problemField(problem.field, "data") : null;
          if (name && fields?.some((field) => field.name === name)) located[name] = problem.message ?? "Invalid.";
          else rest.push(`${problem.field ?? ""}: ${problem.message ?? ""}`);
        }
        if (!fields && rest.length) located.json = rest.join("\n");
        setErrors(located);
        setFormError(fields && rest.length ? `${error.message} ${rest.join(" ")}` : error.message);
      } else {
        setFormError(error instanceof Error ? error.message : String(error));
      }
    } finally {
      setSending(false);
    }
  };

  return (
    <form className="ev-human" data-testid="human-input-form" onSubmit={submit} noValidate>
      <div className="ev-human-title">Input required</div>
      {waiting?.prompt && <p className="ev-human-prompt">{waiting.prompt}</p>}
      {fields ? (
        fields.map((field) => (
          <FieldInput
            key={field.name}
            field={field}
            value={raw[field.name] ?? initialRaw(field)}
            error={errors[field.name]}
            testId={`human-input-${field.name}`}
            onChange={(next) => edit(field.name, next)}
          />
        ))
      ) : (
        <div className={`rf-field${errors.json ? " invalid" : ""}`}>
          <label className="rf-label" htmlFor="human-input-json">
            <span className="rf-name">Answer</span>
            <span className="rf-kind">JSON</span>
          </label>
          <textarea
            id="human-input-json"
            data-testid="human-input-json"
            className="ev-mono"
            rows={6}
            spellCheck={false}
            value={json}
            onChange={(event) => {
              setJson(event.target.value);
              setErrors({});
            }}
          />
          {errors.json && (
            <div className="rf-error" data-testid="human-input-json-error">
              {errors.json}
            </div>
          )}
          <details className="ev-schema">
            <summary>Schema</summary>
            <pre>{prettyJson(schema)}</pre>
          </details>
        </div>
      )}
      {formError && (
        <p className="error" data-testid="human-input-error">
          {formError}
        </p>
      )}
      <button type="submit" className="primary" data-testid="human-input-submit" disabled={sending || sent}>
        {sending ? "Sending…" : sent ? "Sent" : "Submit"}
      </button>
      {waiting?.timeout_s ? <span className="ev-muted ev-human-timeout">times out after {waiting.timeout_s} s</span> : null}
    </form>
  );
}
