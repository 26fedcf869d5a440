// Typed form fields built from a workflow's `inputs` or from a human_input node's JSON Schema,
// with the client-side checks that keep the normal path free of 422s.
import { useState } from "react";
import type { InputSpec, JsonSchema } from "../lib/types";

export type FieldKind = "string" | "number" | "integer" | "boolean" | "object" | "array" | "any";

export interface FieldSpec {
  name: string;
  kind: FieldKind;
  required: boolean;
  defaultValue?: unknown;
  description?: string;
  title?: string;
  options?: unknown[];
  multiline?: boolean;
  /** The property's own schema (human input), checked with validateSchema. */
  schema?: JsonSchema;
}

/** What an input holds: text, or a yes/no state ("" for a yes/no nobody chose yet). */
export type RawValue = string | boolean;

/** A required yes/no without a default: chosen explicitly (true or false), never assumed, so
 * an untouched form does not submit a `false` nobody picked. */
export function needsChoice(field: FieldSpec): boolean {
  return field.kind === "boolean" && !field.options && field.required && typeof field.defaultValue !== "boolean";
}

const KINDS: FieldKind[] = ["string", "number", "integer", "boolean", "object", "array", "any"];

function kindOf(type: unknown): FieldKind {
  const name = Array.isArray(type) ? type.find((t) => t !== "null") : type;
  return KINDS.includes(name as FieldKind) ? (name as FieldKind) : "any";
}

export function fieldsFromInputs(inputs: Record<string, InputSpec> | undefined): FieldSpec[] {
  return Object.entries(inputs ?? {}).map(([name, spec]) => ({
    name,
    kind: kindOf(spec.type),
    required: Boolean(spec.required),
    defaultValue: spec.default ?? undefined,
    description: spec.description || undefined,
  }));
}

const SCALARS: FieldKind[] = ["string", "number", "integer", "boolean"];

/** Fields of a flat object schema (scalar properties only); null when the schema needs the
 * JSON editor instead. */
export function fieldsFromSchema(schema: JsonSchema | null | undefined): FieldSpec[] | null {
  if (!schema || schema.type !== "object" || !schema.properties) return null;
  const entries = Object.entries(schema.properties);
  if (entries.length === 0) return null;
  const required = new Set(schema.required ?? []);
  const fields: FieldSpec[] = [];
  for (const [name, property] of entries) {
    const kind = property.enum ? "string" : kindOf(property.type);
    if (!SCALARS.includes(kind) && !property.enum) return null;
    fields.push({
      name,
      kind,
      required: required.has(name),
      defaultValue: property.default,
      description: property.description,
      title: typeof property.title === "string" ? property.title : undefined,
      options: property.enum,
      multiline: Boolean(property["x-multiline"]) || property.format === "textarea",
      schema: property,
    });
  }
  return fields;
}

/** The raw values and errors of a generated form; `edit` sets a field and clears its error. */
export function useFieldValues() {
  const [raw, setRaw] = useState<Record<string, RawValue>>({});
  const [errors, setErrors] = useState<Record<string, string>>({});
  const edit = (name: string, next: RawValue) => {
    setRaw((previous) => ({ ...previous, [name]: next }));
    setErrors((previous) => {
      const copy = { ...previous };
      delete copy[name];
      return copy;
    });
  };
  return { raw, errors, setErrors, edit };
}

export function initialRaw(field: FieldSpec): RawValue {
  const value = field.defaultValue;
  if (field.kind === "boolean") return needsChoice(field) ? "" : value === true;
  if (value === undefined || value === null) return "";
  if (field.options) return JSON.stringify(value);
  if (typeof value === "string" && field.kind !== "object" && field.kind !== "array") return value;
  return field.kind === "object" || field.kind === "array" || field.kind === "any"
    ? JSON.stringify(value, null, 2)
    : String(value);
}

export type Parsed = { present: false; error?: string } | { present: true; value: unknown };

/** The typed value of one field, or why it cannot be one. */
export function parseRaw(field: FieldSpec, raw: RawValue): Parsed {
  if (field.kind === "boolean") {
    if (raw === "") return field.required ? { present: false, error: "Choose true or false." } : { present: false };
    return { present: true, value: raw === true };
  }
  const text = typeof raw === "string" ? raw : String(raw);
  if (field.options) {
    if (text === "") return field.required ? { present: false, error: "Required." } : { present: false };
    return { present: true, value: JSON.parse(text) };
  }
  if (text.trim() === "" && field.kind !== "string") {
    return field.required ? { present: false, error: "Required." } : { present: false };
  }
  switch (field.kind) {
    case "string":
      if (text === "" && field.required) return { present: false, error: "Required." };
      if (text === "") return { present: false };
      return { present: true, value: text };
    case "number":
    case "integer": {
      const number = Number(text);
      if (!Number.isFinite(number)) return { present: false, error: "Enter a number." };
      if (field.kind === "integer" && !Number.isInteger(number)) {
        return { present: false, error: "Enter a whole number." };
      }
      return { present: true, value: number };
    }
    case "object":
    case "array": {
      let value: unknown;
      try {
        value = JSON.parse(text);
      } catch (error) {
        return { present: false, error: `Invalid JSON: ${(error as Error).message}` };
      }
      const isArray = Array.isArray(value);
      const isObject = value !== null && typeof value === "object" && !isArray;
      if (field.kind === "array" && !isArray) return { present: false, error: "Enter a JSON array." };
      if (field.kind === "object" && !isObject) return { present: false, error: "Enter a JSON object." };
      return { present: true, value };
    }
    default: {
      // `any`: JSON when it parses, else the text itself.
      try {
        return { present: true, value: JSON.parse(text) };
      } catch {
        return { present: true, value: text };
      }
    }
  }
}

/** Every field parsed: the object to send, and the problems by field name. */
export function collect(
  fields: FieldSpec[],
  raw: Record<string, RawValue>,
): { value: Record<string, unknown>; errors: Record<string, string> } {
  const value: Record<string, unknown> = {};
  const errors: Record<string, string> = {};
  for (const field of fields) {
    let parsed: Parsed;
    try {
      parsed = parseRaw(field, raw[field.name] ?? initialRaw(field));
    } catch (error) {
      parsed = { present: false, error: (error as Error).message };
    }
    if (parsed.present) value[field.name] = parsed.value;
    else if (parsed.error) errors[field.name] = parsed.error;
  }
  return { value, errors };
}

// ---- a small JSON Schema check (the server has the last word) ---------------------------

export interface SchemaProblem {
  path: string[];
  message: string;
}

function typeName(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "array";
  if (typeof value === "number") return Number.isInteger(value) ? "integer" : "number";
  return typeof value;
}

function matchesType(value: unknown, type: string): boolean {
  const actual = typeName(value);
  return actual === type || (type === "number" && actual === "integer");
}

/** The problems of value against the common JSON Schema keywords (others are left to the
 * server): type, enum, const, required, properties, additionalProperties: false, items, and
 * the length, size and range bounds. */
export function validateSchema(schema: JsonSchema | undefined, value: unknown, path: string[] = []): SchemaProblem[] {
  if (!schema || typeof schema !== "object") return [];
  const problems: SchemaProblem[] = [];
  const fail = (message: string) => problems.push({ path, message });
  if (schema.type !== undefined) {
    const types = Array.isArray(schema.type) ? schema.type : [schema.type];
    if (!types.some((type) => matchesType(value, type))) {
      fail(`Expected ${types.join(" or ")}, got ${typeName(value)}.`);
      return problems;
    }
  }
  if (schema.enum && !schema.enum.some((option) => JSON.stringify(option) === JSON.stringify(value))) {
    fail(`Must be one of ${schema.enum.map((option) => JSON.stringify(option)).join(", ")}.`);
  }
  if ("const" in schema && JSON.stringify(schema.const) !== JSON.stringify(value)) {
    fail(`Must be ${JSON.stringify(schema.const)}.`);
  }
  const bound = (key: string) => (typeof schema[key] === "number" ? (schema[key] as number) : undefined);
  if (typeof value === "string") {
    const length = [...value].length;
    const min = bound("minLength");
    const max = bound("maxLength");
    if (min !== undefined && length < min) fail(min === 1 ? "Required." : `At least ${min} characters.`);
    if (max !== undefined && length > max) fail(`At most ${max} characters.`);
    if (typeof schema.pattern === "string") {
      try {
        if (!new RegExp(schema.pattern, "u").test(value)) fail(`Must match ${schema.pattern}.`);
      } catch {
        // A pattern JavaScript cannot compile: the server decides.
      }
    }
  }
  if (typeof value === "number") {
    const checks: [string, (limit: number) => boolean, string][] = [
      ["minimum", (limit) => value < limit, "≥"],
      ["maximum", (limit) => value > limit, "≤"],
      ["exclusiveMinimum", (limit) => value <= limit, ">"],
      ["exclusiveMaximum", (limit) => value >= limit, "<"],
    ];
    for (const [key, broken, sign] of checks) {
      const limit = bound(key);
      if (limit !== undefined && broken(limit)) fail(`Must be ${sign} ${limit}.`);
    }
  }
  if (Array.isArray(value)) {
    const min = bound("minItems");
    const max = bound("maxItems");
    if (min !== undefined && value.length < min) fail(`At least ${min} items.`);
    if (max !== undefined && value.length > max) fail(`At most ${max} items.`);
    if (schema.items && typeof schema.items === "object") {
      value.forEach((item, index) => problems.push(...validateSchema(schema.items, item, [...path, String(index)])));
    }
  }
  if (typeName(value) === "object") {
    const record = value as Record<string, unknown>;
    for (const name of schema.required ?? []) {
      if (!(name in record)) problems.push({ path: [...path, name], message: "Required." });
    }
    const properties = schema.properties ?? {};
    for (const [name, item] of Object.entries(record)) {
      if (properties[name]) problems.push(...validateSchema(properties[name], item, [...path, name]));
      else if (schema.additionalProperties === false) {
        problems.push({ path: [...path, name], message: "Not allowed here." });
      }
    }
  }
  return problems;
}

/** A located API problem (`inputs.name`, `data['field']`) as the field it is about. */
export function problemField(field: unknown, prefix: "inputs" | "data"): string | null {
  if (typeof field !== "string") return null;
  if (prefix === "inputs") {
    const match = /^inputs\.([^.[]+)/.exec(field);
    return match ? match[1] : null;
  }
  const match = /^data\[(['"])(.*?)\1\]/.exec(field);
  return match ? match[2] : null;
}

export function describeKind(field: FieldSpec): string {
  if (field.options) return "choice";
  if (field.kind === "object" || field.kind === "array") return `${field.kind} (JSON)`;
  if (field.kind === "any") return "JSON or text";
  return field.kind;
}

export function FieldInput({
  field,
  value,
  error,
  testId,
  onChange,
}: {
  field: FieldSpec;
  value: RawValue;
  error?: string;
  testId: string;
  onChange: (value: RawValue) => void;
}) {
  const id = `${testId}-control`;
  const label = field.title ?? field.name;
  let control;
  if (needsChoice(field)) {
    control = (
      <div className="rf-choice" role="radiogroup" aria-label={label} data-testid={testId} data-chosen={value === "" ? "none" : String(value)}>
        {[true, false].map((option) => (
          <label key={String(option)} className="rf-check">
            <input
              type="radio"
              name={id}
              id={option ? id : undefined}
              data-testid={`${testId}-${option}`}
              checked={value === option}
              onChange={() => onChange(option)}
            />
            <span>{String(option)}</span>
          </label>
        ))}
      </div>
    );
  } else if (field.kind === "boolean" && !field.options) {
    control = (
      <label className="rf-check">
        <input
          id={id}
          type="checkbox"
          data-testid={testId}
          checked={value === true}
          onChange={(event) => onChange(event.target.checked)}
        />
        <span>{value === true ? "true" : "false"}</span>
      </label>
    );
  } else if (field.options) {
    control = (
      <select id={id} data-testid={testId} value={String(value)} onChange={(event) => onChange(event.target.value)}>
        <option value="">{field.required ? "Choose…" : "—"}</option>
        {field.options.map((option) => (
          <option key={JSON.stringify(option)} value={JSON.stringify(option)}>
            {typeof option === "string" ? option : JSON.stringify(option)}
          </option>
        ))}
      </select>
    );
  } else if (field.kind === "object" || field.kind === "array" || field.multiline) {
    control = (
      <textarea
        id={id}
        data-testid={testId}
        rows={field.kind === "string" ? 3 : 4}
        spellCheck={false}
        className={field.kind === "string" ? "" : "ev-mono"}
        placeholder={field.kind === "array" ? "[ ]" : field.kind === "object" ? "{ }" : ""}
        value={String(value)}
        onChange={(event) => onChange(event.target.value)}
      />
    );
  } else {
    control = (
      <input
        id={id}
        data-testid={testId}
        type={field.kind === "number" || field.kind === "integer" ? "number" : "text"}
        step={field.kind === "integer" ? 1 : "any"}
        value={String(value)}
        onChange={(event) => onChange(event.target.value)}
      />
    );
  }
  return (
    <div className={`rf-field${error ? " invalid" : ""}`}>
      <label htmlFor={id} className="rf-label">
        <span className="rf-name">{label}</span>
        {field.required && (
          <span className="rf-required" title="required">
            *
          </span>
        )}
        <span className="rf-kind">{describeKind(field)}</span>
      </label>
      {control}
      {field.description && <div className="rf-help">{field.description}</div>}
      {error && (
        <div className="rf-error" data-testid={`${testId}-error`}>
          {error}
        </div>
      )}
    </div>
  );
}
