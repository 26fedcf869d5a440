// Params of the AI and tool nodes picked from what the services offer: the model of an llm or
// agent node, the tool of a tool node with a form for its arguments generated from the tool's
// input schema, and the tools an agent may call.
import { useId, useState } from "react";
import type { JsonSchema } from "../lib/types";
import type { Catalog, ToolInfo } from "./catalog";
import { Field, JsonInput, ParamField, type FieldProblem } from "./fields";

const OTHER = "\u0000other";

interface PickerProps {
  value: unknown;
  onChange: (value: unknown) => void;
  catalog: Catalog | null;
  required: boolean;
  error?: FieldProblem;
  hint?: string;
}

/** The model of an llm or agent node: one of the AI service's models, or (Other…) any value
 * the schema takes — a name the service does not list, a fallback chain, a template. */
export function ModelPicker({ value, onChange, catalog, required, error, hint }: PickerProps) {
  const id = useId();
  const models = catalog?.models ?? null;
  const listed = typeof value === "string" && (models ?? []).some((model) => model.name === value);
  const [other, setOther] = useState(false);
  // Until the list is read the select waits (a model that is there is not shown as "other").
  const loading = catalog === null;
  const custom = !loading && (other || (value !== undefined && !listed) || models === null);
  const chosen = listed ? (models ?? []).find((model) => model.name === value) : undefined;
  const description = models === null && catalog?.error ? catalog.error : chosen?.info?.description;
  return (
    <Field label="model" required={required} htmlFor={id} error={error} hint={description ? `${description} ${hint ?? ""}` : hint}>
      {loading && (
        <select id={id} data-testid="param-model" disabled value="">
          <option value="">{typeof value === "string" ? value : "Loading models…"}</option>
        </select>
      )}
      {!loading && models !== null && (
        <select
          id={id}
          data-testid="param-model"
          value={custom ? OTHER : listed ? String(value) : ""}
          onChange={(event) => {
            const picked = event.target.value;
            if (picked === OTHER) return setOther(true);
            setOther(false);
            onChange(picked === "" ? undefined : picked);
          }}
        >
          <option value="">Choose a model…</option>
          {models.map((model) => (
            <option key={model.name} value={model.name}>
              {model.name} · {model.provider}
              {model.healthy ? "" : " (unavailable)"}
            </option>
          ))}
          <option value={OTHER}>Other: a name, a fallback chain ["a", "b"] or a template…</option>
        </select>
      )}
      {custom && <JsonInput testId="param-model-custom" rows={1} value={value} placeholder='"gpt-4o" or ["primary", "fallback"]' onChange={onChange} />}
    </Field>
  );
}

/** The tool of a tool node, from the tool service's list. */
export function ToolPicker({ value, onChange, catalog, required, error }: PickerProps) {
  const id = useId();
  const tools = catalog?.tools ?? null;
  const known = tools?.find((tool) => tool.name === value);
  if (catalog === null) {
    return (
      <Field label="tool" required={required} htmlFor={id} error={error}>
        <select id={id} data-testid="param-name" disabled value="">
          <option value="">{typeof value === "string" ? value : "Loading tools…"}</option>
        </select>
      </Field>
    );
  }
  if (tools === null) {
    return (
      <Field label="name" required={required} htmlFor={id} error={error} hint={catalog?.error ?? "The tool's name."}>
        <JsonInput id={id} testId="param-name" rows={1} value={value} onChange={onChange} />
      </Field>
    );
  }
  return (
    <Field label="tool" required={required} htmlFor={id} error={error} hint={known?.description}>
      <select id={id} data-testid="param-name" value={typeof value === "string" ? value : ""} onChange={(event) => onChange(event.target.value || undefined)}>
        <option value="">Choose a tool…</option>
        {typeof value === "string" && value && !known && <option value={value}>{value} (not offered by the tool service)</option>}
        {tools.map((tool) => (
          <option key={tool.name} value={tool.name}>
            {tool.name}
            {tool.source && tool.source !== "builtin" ? ` · ${tool.source}` : ""}
          </option>
        ))}
      </select>
    </Field>
  );
}

function objectOf(value: unknown): Record<string, unknown> | null {
  return value && typeof value === "object" && !Array.isArray(value) ? (value as Record<string, unknown>) : null;
}

/** A tool node's arguments: a field per property of the chosen tool's input schema (each may
 * hold a `{{ }}` template), or the whole object as JSON. */
export function ToolArguments({
  tool,
  value,
  onChange,
  error,
}: {
  tool: ToolInfo | undefined;
  value: unknown;
  onChange: (value: unknown) => void;
  error?: FieldProblem;
}) {
  const [asJson, setAsJson] = useState(false);
  const schema: JsonSchema | undefined = tool?.input_schema;
  const properties = schema?.properties ?? {};
  const names = Object.keys(properties);
  const args = objectOf(value);
  const required = new Set(schema?.required ?? []);
  const extra = args ? Object.keys(args).filter((name) => !names.includes(name)) : [];
  const generated = Boolean(tool) && names.length > 0 && (value === undefined || args !== null) && !asJson;
  const setArgument = (name: string, next: unknown) => {
    const updated = { ...(args ?? {}) };
    if (next === undefined) delete updated[name];
    else updated[name] = next;
    onChange(Object.keys(updated).length ? updated : undefined);
  };
  return (
    <div className="ed-tool-args" data-testid="tool-arguments">
      <div className="ed-tool-args-head">
        <span>arguments</span>
        {tool && names.length > 0 && (
          <button type="button" className="ed-small-button" data-testid="tool-arguments-mode" onClick={() => setAsJson(!asJson)}>
            {generated ? "Edit as JSON" : "Edit as form"}
          </button>
        )}
      </div>
      {error && <Field label="" error={error}>{null}</Field>}
      {generated ? (
        <>
          {names.map((name) => (
            <ParamField
              key={name}
              name={name}
              schema={properties[name]}
              value={args?.[name]}
              required={required.has(name)}
              testPrefix="tool-arg-"
              onChange={(next) => setArgument(name, next)}
            />
          ))}
          {extra.map((name) => (
            <Field key={name} label={`${name} (not in the tool's schema)`} error={{ text: `'${tool?.name}' takes no argument '${name}'.`, warning: true }}>
              <JsonInput testId={`tool-arg-${name}`} value={args?.[name]} onChange={(next) => setArgument(name, next)} />
            </Field>
          ))}
        </>
      ) : (
        <Field label="" hint={tool ? undefined : "Choose a tool to get a form for its arguments."}>
          <JsonInput testId="param-arguments" value={value} placeholder='{"key": "value"}' onChange={onChange} />
        </Field>
      )}
    </div>
  );
}

/** The tools an agent may call: a box per tool of the tool service. */
export function ToolChecklist({ value, onChange, catalog, error }: PickerProps) {
  const tools = catalog?.tools ?? null;
  const picked = Array.isArray(value) ? value.map(String) : [];
  if (tools === null || (value !== undefined && !Array.isArray(value))) {
    return (
      <Field label="tools" error={error} hint="Names of the tools the agent may call.">
        <JsonInput testId="param-tools" value={value} onChange={onChange} placeholder='["calculator"]' />
      </Field>
    );
  }
  const unknown = picked.filter((name) => !tools.some((tool) => tool.name === name));
  const toggle = (name: string, on: boolean) => {
    const next = on ? [...picked, name] : picked.filter((other) => other !== name);
    onChange(next.length ? next : undefined);
  };
  return (
    <Field label="tools" error={error} hint="The tools the agent may call.">
      <div className="ed-checklist" data-testid="param-tools">
        {[...tools.map((tool) => ({ name: tool.name, title: tool.description })), ...unknown.map((name) => ({ name, title: "not offered by the tool service" }))].map(
          ({ name, title }) => (
            <label key={name} className="ed-check" title={title}>
              <input type="checkbox" data-testid={`agent-tool-${name}`} checked={picked.includes(name)} onChange={(event) => toggle(name, event.target.checked)} />
              <span className="ed-mono">{name}</span>
            </label>
          ),
        )}
      </div>
    </Field>
  );
}
