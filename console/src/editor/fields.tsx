// Inputs of the inspector, including the params form generated from a node type's JSON Schema.
//
// Fields keep a local draft while the user types (a number field holding "1." or a JSON field
// holding half an object) and report a value only when the draft parses; an outside change
// (undo, rename, import) replaces the draft.
import { useEffect, useId, useRef, useState, type ReactNode } from "react";
import type { JsonSchema } from "../lib/types";
import { useReferenceAutocomplete } from "./references";

type Parsed = { ok: true; value: unknown } | { ok: false; error: string };

function same(a: unknown, b: unknown): boolean {
  return a === b || JSON.stringify(a) === JSON.stringify(b);
}

function useDraft(value: unknown, format: (value: unknown) => string, parse: (text: string) => Parsed, onChange: (value: unknown) => void) {
  const [text, setText] = useState(() => format(value));
  const [error, setError] = useState<string | null>(null);
  const reported = useRef(value);
  useEffect(() => {
    if (!same(value, reported.current)) {
      reported.current = value;
      setText(format(value));
      setError(null);
    }
  }, [value, format]);
  const edit = (next: string) => {
    setText(next);
    const parsed = parse(next);
    if (parsed.ok) {
      setError(null);
      reported.current = parsed.value;
      onChange(parsed.value);
    } else {
      setError(parsed.error);
    }
  };
  return { text, error, edit };
}

// ------------------------------------------------------------------ value formats

const asText = (value: unknown) => (value === undefined || value === null ? "" : String(value));

function parseNumber(integer: boolean) {
  return (text: string): Parsed => {
    const trimmed = text.trim();
    if (!trimmed) return { ok: true, value: undefined };
    // A template ("{{ inputs.n }}") may stand wherever a number could.
    if (trimmed.includes("{{")) return { ok: true, value: trimmed };
    const number = Number(trimmed);
    if (!Number.isFinite(number)) return { ok: false, error: "Not a number." };
    if (integer && !Number.isInteger(number)) return { ok: false, error: "Must be a whole number." };
    return { ok: true, value: number };
  };
}

/** JSON, or plain text for a value that does not look like JSON (so `{{ fetch.body }}` or
 * `hello` can be typed as is); empty means unset. */
export function parseLoose(text: string): Parsed {
  const trimmed = text.trim();
  if (!trimmed) return { ok: true, value: undefined };
  try {
    return { ok: true, value: JSON.parse(trimmed) };
  } catch (error) {
    if (trimmed.startsWith("{{") || trimmed.startsWith("{%") || !/^[{["]/.test(trimmed)) {
      return { ok: true, value: text };
    }
    return { ok: false, error: `Invalid JSON: ${(error as Error).message}` };
  }
}

export function formatLoose(value: unknown): string {
  if (value === undefined || value === "") return "";
  if (typeof value === "string") {
    const back = parseLoose(value);
    if (back.ok && back.value === value) return value;
  }
  // Short values on one line (`["a", "b"]`); JSON escapes newlines inside strings.
  const compact = JSON.stringify(value, null, 1)
    .replace(/([[{])\n\s*/g, "$1")
    .replace(/\n\s*([\]}])/g, "$1")
    .replace(/\n\s*/g, " ");
  return compact.length <= 60 ? compact : JSON.stringify(value, null, 2);
}

// ------------------------------------------------------------------ layout

/** A problem shown under a field; warnings do not block saving and look it. */
export type FieldProblem = string | { text: string; warning: boolean } | null | undefined;

export function Field({
  label,
  hint,
  error,
  required,
  htmlFor,
  children,
}: {
  label: string;
  hint?: string;
  error?: FieldProblem;
  required?: boolean;
  htmlFor?: string;
  children: ReactNode;
}) {
  const warning = typeof error === "object" && error !== null && error.warning;
  const text = typeof error === "object" && error !== null ? error.text : error;
  return (
    <div className={`ed-field${text ? (warning ? " has-warning" : " has-error") : ""}`}>
      {label && (
        <label htmlFor={htmlFor}>
          {label}
          {required && <span className="ed-required" title="required">*</span>}
        </label>
      )}
      {children}
      {text && <div className={`ed-field-error${warning ? " warning" : ""}`}>{text}</div>}
      {hint && !text && <div className="ed-hint">{hint}</div>}
    </div>
  );
}

// ------------------------------------------------------------------ simple inputs

interface InputProps {
  value: unknown;
  onChange: (value: unknown) => void;
  testId?: string;
  id?: string;
  placeholder?: string;
}

export function TextInput({ value, onChange, testId, id, placeholder, multiline }: InputProps & { multiline?: boolean }) {
  const text = asText(value);
  const change = (next: string) => onChange(next === "" ? undefined : next);
  const { bind, menu } = useReferenceAutocomplete(text, change);
  return (
    <div className="ed-suggest-wrap">
      {multiline ? (
        <textarea
          {...bind}
          id={id}
          data-testid={testId}
          className="ed-code"
          rows={Math.min(8, Math.max(3, text.split("\n").length))}
          value={text}
          placeholder={placeholder}
          onChange={(event) => change(event.target.value)}
        />
      ) : (
        <input {...bind} id={id} data-testid={testId} value={text} placeholder={placeholder} onChange={(event) => change(event.target.value)} />
      )}
      {menu}
    </div>
  );
}

export function NumberInput({ value, onChange, testId, id, placeholder, integer }: InputProps & { integer?: boolean }) {
  const draft = useDraft(value, asText, parseNumber(Boolean(integer)), onChange);
  return (
    <>
      <input
        id={id}
        data-testid={testId}
        inputMode={integer ? "numeric" : "decimal"}
        value={draft.text}
        placeholder={placeholder}
        aria-invalid={draft.error ? true : undefined}
        onChange={(event) => draft.edit(event.target.value)}
      />
      {draft.error && <div className="ed-field-error">{draft.error}</div>}
    </>
  );
}

export function JsonInput({ value, onChange, testId, id, placeholder, rows = 3 }: InputProps & { rows?: number }) {
  const draft = useDraft(value, formatLoose, parseLoose, onChange);
  const { bind, menu } = useReferenceAutocomplete(draft.text, draft.edit);
  return (
    <>
      <div className="ed-suggest-wrap">
        <textarea
          {...bind}
          id={id}
          data-testid={testId}
          className="ed-code"
          spellCheck={false}
          rows={Math.min(10, Math.max(rows, draft.text.split("\n").length))}
          value={draft.text}
          placeholder={placeholder}
          aria-invalid={draft.error ? true : undefined}
          onChange={(event) => draft.edit(event.target.value)}
        />
        {menu}
      </div>
      {draft.error && <div className="ed-field-error">{draft.error}</div>}
    </>
  );
}

// ------------------------------------------------------------------ params from a JSON Schema

type Kind = "string" | "text" | "number" | "integer" | "boolean" | "enum" | "json";

function kindOf(schema: JsonSchema): Kind {
  if (Array.isArray(schema.enum) && schema.enum.length) return "enum";
  switch (schema.type) {
    case "string":
      return schema["x-multiline"] ? "text" : "string";
    case "number":
      return "number";
    case "integer":
      return "integer";
    case "boolean":
      return "boolean";
    default:
      return "json"; // objects, arrays, unions and values of any type
  }
}

function jsonPlaceholder(schema: JsonSchema): string {
  if (schema.default !== undefined) return JSON.stringify(schema.default);
  if (schema.type === "array") return '["a", "b"] or {{ node.items }}';
  if (schema.type === "object") return '{"key": "value"}';
  return 'text, {{ node.field }} or JSON';
}

export function ParamField({
  name,
  schema,
  value,
  required,
  error,
  onChange,
  testPrefix = "param-",
}: {
  name: string;
  schema: JsonSchema;
  value: unknown;
  required: boolean;
  error?: FieldProblem;
  onChange: (value: unknown) => void;
  /** The field's data-testid is the prefix and the name. */
  testPrefix?: string;
}) {
  const id = useId();
  const kind = kindOf(schema);
  const testId = `${testPrefix}${name}`;
  const hint = typeof schema.description === "string" ? schema.description : undefined;
  const fallback = schema.default;
  let input: ReactNode;
  if (kind === "boolean") {
    const checked = typeof value === "boolean" ? value : fallback === true;
    return (
      <Field label="" error={error} hint={hint}>
        <label className="ed-check">
          <input type="checkbox" data-testid={testId} checked={checked} onChange={(event) => onChange(event.target.checked)} />
          {name}
          {required && <span className="ed-required">*</span>}
        </label>
      </Field>
    );
  }
  if (kind === "enum") {
    const options = (schema.enum ?? []).map((option) => JSON.stringify(option));
    const current = value === undefined ? "" : JSON.stringify(value);
    input = (
      <select id={id} data-testid={testId} value={current} onChange={(event) => onChange(event.target.value === "" ? undefined : JSON.parse(event.target.value))}>
        {(!required || value === undefined) && (
          <option value="">{fallback !== undefined ? `default (${String(fallback)})` : "—"}</option>
        )}
        {!options.includes(current) && current !== "" && <option value={current}>{current}</option>}
        {(schema.enum ?? []).map((option, index) => (
          <option key={options[index]} value={options[index]}>
            {String(option)}
          </option>
        ))}
      </select>
    );
  } else if (kind === "number" || kind === "integer") {
    input = (
      <NumberInput id={id} testId={testId} value={value} onChange={onChange} integer={kind === "integer"} placeholder={fallback !== undefined ? String(fallback) : undefined} />
    );
  } else if (kind === "string" || kind === "text") {
    input = (
      <TextInput id={id} testId={testId} value={value} onChange={onChange} multiline={kind === "text"} placeholder={fallback !== undefined ? String(fallback) : undefined} />
    );
  } else {
    input = <JsonInput id={id} testId={testId} value={value} onChange={onChange} placeholder={jsonPlaceholder(schema)} />;
  }
  return (
    <Field label={name} hint={hint} error={error} required={required} htmlFor={id}>
      {input}
    </Field>
  );
}
