// The right-hand panel: the selected node (id, label, params from its type's JSON Schema,
// common fields), the selected edge, or the workflow itself when nothing is selected.
import { useEffect, useId, useState } from "react";
import type { InputSpec, NodeDef, NodeTypeSpec } from "../lib/types";
import { Field, JsonInput, NumberInput, ParamField, TextInput, type FieldProblem } from "./fields";
import { nodeIdProblem, uid, type FlowEdge, type FlowNode, type Meta } from "./model";
import type { LocatedIssue } from "./validation";
import { TypeBadge } from "./NodeCard";
import type { Catalog } from "./catalog";
import { ModelPicker, ToolArguments, ToolChecklist, ToolPicker } from "./pickers";
import { LastRun, type LastRunState } from "./LastRun";

// ------------------------------------------------------------------ helpers

/** The message without the field path the server prefixes it with. */
export function shortMessage(issue: LocatedIssue): string {
  if (issue.field && issue.message.startsWith(`${issue.field}: `)) {
    return issue.message.slice(issue.field.length + 2);
  }
  return issue.message;
}

function issuesAt(issues: LocatedIssue[], test: (path: string) => boolean): LocatedIssue[] {
  return issues.filter((issue) => issue.path !== undefined && test(issue.path));
}

function joined(issues: LocatedIssue[]): FieldProblem {
  if (!issues.length) return null;
  return { text: issues.map(shortMessage).join(" "), warning: issues.every((issue) => issue.severity === "warning") };
}

function ProblemLine({ problem }: { problem: FieldProblem }) {
  if (!problem || typeof problem === "string") return problem ? <div className="ed-field-error">{problem}</div> : null;
  return <div className={`ed-field-error${problem.warning ? " warning" : ""}`}>{problem.text}</div>;
}

function IssueBox({ issues }: { issues: LocatedIssue[] }) {
  if (!issues.length) return null;
  return (
    <ul className="ed-issue-box">
      {issues.map((issue, index) => (
        <li key={index} className={issue.severity === "warning" ? "warning" : "error"}>
          {issue.message}
        </li>
      ))}
    </ul>
  );
}

// ------------------------------------------------------------------ node

function NodeIdField({
  value,
  taken,
  onRename,
}: {
  value: string;
  taken: string[];
  onRename: (next: string) => void;
}) {
  const id = useId();
  const [draft, setDraft] = useState(value);
  useEffect(() => setDraft(value), [value]);
  const problem = draft === value ? null : nodeIdProblem(draft, taken);
  const commit = () => {
    if (draft !== value && !problem) onRename(draft);
  };
  return (
    <Field label="Node id" htmlFor={id} error={problem} hint="Templates reference it as {{ id.field }}; renaming updates edges and references.">
      <input
        id={id}
        data-testid="node-id"
        className="ed-mono"
        value={draft}
        spellCheck={false}
        onChange={(event) => setDraft(event.target.value.trim())}
        onBlur={commit}
        onKeyDown={(event) => {
          if (event.key === "Enter") commit();
          if (event.key === "Escape") setDraft(value);
        }}
      />
    </Field>
  );
}

const ON_ERROR = [
  ["fail", "fail — the execution fails"],
  ["continue", "continue — record, go on"],
  ["skip", "skip — skip downstream"],
  ["fail_branch", "fail_branch — route to 'error'"],
] as const;

export function NodeInspector({
  node,
  spec,
  issues,
  otherIds,
  onChange,
  onRename,
  onDelete,
  catalog,
  lastRun,
}: {
  node: FlowNode;
  spec: NodeTypeSpec | undefined;
  issues: LocatedIssue[];
  otherIds: string[];
  catalog: Catalog | null;
  lastRun: LastRunState;
  onChange: (update: (def: NodeDef) => NodeDef, historyKey: string) => void;
  onRename: (next: string) => void;
  onDelete: () => void;
}) {
  const def = node.data.def;
  const params = def.params ?? {};
  const schema = spec?.params_schema;
  const properties = schema?.properties ?? {};
  const required = new Set(schema?.required ?? []);
  const known = Object.keys(properties);
  const extraParams = Object.keys(params).filter((name) => !known.includes(name));

  const set = (key: keyof NodeDef & string, value: unknown) =>
    onChange((current) => {
      const next: NodeDef = { ...current };
      if (value === undefined || value === "") delete next[key];
      else next[key] = value;
      return next;
    }, `${node.id}:${key}`);
  const setParam = (name: string, value: unknown) =>
    onChange((current) => {
      const nextParams = { ...(current.params ?? {}) };
      if (value === undefined) delete nextParams[name];
      else nextParams[name] = value;
      return { ...current, params: nextParams };
    }, `${node.id}:params.${name}`);

  const requiredIssue = (name: string) =>
    joined(issues.filter((issue) => issue.path === "params" && issue.message.includes(`'${name}' is a required property`)));
  const paramIssue = (name: string) =>
    joined(
      issuesAt(issues, (path) => path === `params.${name}` || path.startsWith(`params.${name}.`) || path.startsWith(`params.${name}[`)),
    ) ?? requiredIssue(name);
  const placed = (issue: LocatedIssue) => {
    const path = issue.path ?? "";
    if (path === "params") return known.some((name) => issue.message.includes(`'${name}' is a required property`));
    if (path.startsWith("params.") || path.startsWith("params[")) {
      return known.some((name) => path === `params.${name}` || path.startsWith(`params.${name}.`) || path.startsWith(`params.${name}[`));
    }
    const shown = ["when", "timeout_s", "retry", "on_error", "cache", "label"];
    if (def.on_error === "continue") shown.push("default_output");
    return shown.some((key) => path === key || path.startsWith(`${key}.`) || path.startsWith(`${key}[`));
  };
  const unplaced = issues.filter((issue) => !placed(issue));

  const retry = (def.retry ?? {}) as Record<string, unknown>;
  const cache = def.cache && typeof def.cache === "object" ? (def.cache as Record<string, unknown>) : null;
  const fieldIssue = (path: string) =>
    joined(issuesAt(issues, (p) => p === path || p.startsWith(`${path}.`) || p.startsWith(`${path}[`)));

  const cacheIssue = fieldIssue("cache") as { text: string } | null;
  return (
    <div className="ed-inspector-body">
      <div className="ed-inspector-head">
        <TypeBadge type={def.type} category={spec?.category} />
        <div>
          <div className="ed-inspector-title">{spec?.title ?? def.type}</div>
          <div className="ed-muted ed-small">
            {def.type}
            {spec ? ` · v${spec.version}` : " · unknown type"}
          </div>
        </div>
        <button type="button" className="danger ed-push" data-testid="delete-node" title="Delete node (Delete)" onClick={onDelete}>
          Delete
        </button>
      </div>
      {spec?.description && <p className="ed-muted ed-small">{spec.description}</p>}
      <IssueBox issues={unplaced} />

      <NodeIdField value={def.id} taken={otherIds} onRename={onRename} />
      <Field label="Label" hint="Shown on the canvas." error={fieldIssue("label")}>
        <TextInput testId="node-label" value={def.label} placeholder={spec?.title} onChange={(value) => set("label", value)} />
      </Field>

      <h4>Parameters</h4>
      {known.length === 0 && extraParams.length === 0 && <p className="ed-muted ed-small">This node type has no parameters.</p>}
      {known.map((name) => {
        const field = {
          value: params[name],
          required: required.has(name),
          error: paramIssue(name),
          onChange: (value: unknown) => setParam(name, value),
        };
        const hint = typeof properties[name]?.description === "string" ? (properties[name].description as string) : undefined;
        const props = { ...field, catalog, hint };
        if ((def.type === "llm" || def.type === "agent") && name === "model") return <ModelPicker key={name} {...props} />;
        if (def.type === "agent" && name === "tools") return <ToolChecklist key={name} {...props} />;
        if (def.type === "tool" && name === "name") return <ToolPicker key={name} {...props} />;
        if (def.type === "tool" && name === "arguments") {
          const tool = catalog?.tools?.find((candidate) => candidate.name === params.name);
          return <ToolArguments key={`${name}:${tool?.name ?? ""}`} tool={tool} value={params[name]} error={props.error} onChange={props.onChange} />;
        }
        return <ParamField key={name} name={name} schema={properties[name]} {...field} />;
      })}
      {extraParams.map((name) => (
        <Field key={name} label={`${name} (not in the schema)`} error={fieldIssue(`params.${name}`)}>
          <JsonInput testId={`param-${name}`} value={params[name]} onChange={(value) => setParam(name, value)} />
        </Field>
      ))}

      <LastRun nodeId={def.id} state={lastRun} />

      <h4>Execution</h4>
      <Field label="Run only when" hint="An expression, e.g. fetch.status == 200" error={fieldIssue("when")}>
        <TextInput testId="node-when" value={def.when} placeholder="always" onChange={(value) => set("when", value)} />
      </Field>
      <div className="ed-row">
        <Field label="Timeout (s)" error={fieldIssue("timeout_s")}>
          <NumberInput testId="node-timeout" value={def.timeout_s} placeholder="none" onChange={(value) => set("timeout_s", value)} />
        </Field>
        <Field label="Max attempts" error={fieldIssue("retry")}>
          <NumberInput
            testId="node-retry"
            integer
            value={retry.max_attempts}
            placeholder="1"
            onChange={(value) =>
              onChange((current) => {
                const next: NodeDef = { ...current };
                const nextRetry = { ...((current.retry ?? {}) as Record<string, unknown>) };
                if (value === undefined) delete nextRetry.max_attempts;
                else nextRetry.max_attempts = value;
                if (Object.keys(nextRetry).length) next.retry = nextRetry;
                else delete next.retry;
                return next;
              }, `${node.id}:retry`)
            }
          />
        </Field>
      </div>
      <Field label="On error" error={fieldIssue("on_error")}>
        <select data-testid="node-on-error" value={def.on_error ?? "fail"} onChange={(event) => set("on_error", event.target.value === "fail" ? undefined : event.target.value)}>
          {ON_ERROR.map(([value, text]) => (
            <option key={value} value={value}>
              {text}
            </option>
          ))}
        </select>
      </Field>
      {def.on_error === "continue" && (
        <Field label="Output on error" hint="What downstream nodes get instead." error={fieldIssue("default_output")}>
          <JsonInput testId="node-default-output" value={def.default_output} onChange={(value) => set("default_output", value)} />
        </Field>
      )}
      <div className="ed-field ed-check">
        <label>
          <input
            type="checkbox"
            data-testid="node-cache"
            checked={cache !== null}
            onChange={(event) => set("cache", event.target.checked ? {} : undefined)}
          />
          Cache results (same type, params and inputs)
        </label>
        {cacheIssue && <div className="ed-field-error">{cacheIssue.text}</div>}
      </div>
      {cache && (
        <Field label="Cache TTL (s)">
          <NumberInput
            testId="node-cache-ttl"
            value={cache.ttl_s}
            placeholder="forever"
            onChange={(value) => set("cache", value === undefined ? {} : { ...cache, ttl_s: value })}
          />
        </Field>
      )}
    </div>
  );
}

// ------------------------------------------------------------------ edge

export function EdgeInspector({
  edge,
  source,
  target,
  issues,
  onDelete,
}: {
  edge: FlowEdge;
  source: string;
  target: string;
  issues: LocatedIssue[];
  onDelete: () => void;
}) {
  return (
    <div className="ed-inspector-body">
      <div className="ed-inspector-head">
        <div className="ed-inspector-title">Edge</div>
        <button type="button" className="danger ed-push" data-testid="delete-edge" onClick={onDelete}>
          Delete
        </button>
      </div>
      <IssueBox issues={issues} />
      <dl className="ed-facts">
        <dt>From</dt>
        <dd className="ed-mono">
          {source}
          {edge.data?.sourcePort ? ` · ${edge.data.sourcePort}` : ""}
        </dd>
        <dt>To</dt>
        <dd className="ed-mono">
          {target}
          {edge.data?.targetPort ? ` · ${edge.data.targetPort}` : ""}
        </dd>
      </dl>
      <p className="ed-muted ed-small">Drag from an output port to an input port to connect nodes.</p>
    </div>
  );
}

// ------------------------------------------------------------------ workflow

const INPUT_TYPES = ["any", "string", "number", "integer", "boolean", "object", "array"];

export function WorkflowPanel({
  meta,
  issues,
  onChange,
}: {
  meta: Meta;
  issues: LocatedIssue[];
  onChange: (update: (meta: Meta) => Meta, historyKey: string) => void;
}) {
  const nameCounts = (rows: { name: string }[]) => {
    const counts = new Map<string, number>();
    for (const row of rows) counts.set(row.name, (counts.get(row.name) ?? 0) + 1);
    return counts;
  };
  const inputCounts = nameCounts(meta.inputs);
  const outputCounts = nameCounts(meta.outputs);
  const setInput = (key: string, update: (spec: InputSpec, name: string) => [string, InputSpec], what: string) =>
    onChange(
      (current) => ({
        ...current,
        inputs: current.inputs.map((row) => {
          if (row.key !== key) return row;
          const [name, spec] = update(row.spec, row.name);
          return { ...row, name, spec };
        }),
      }),
      `input:${key}:${what}`,
    );
  const fieldIssue = (prefix: string) =>
    joined(issues.filter((issue) => issue.field === prefix || issue.field?.startsWith(`${prefix}.`) || issue.field?.startsWith(`${prefix}[`)));
  const other = issues.filter((issue) => !issue.field || !/^(name|description)$/.test(issue.field));

  return (
    <div className="ed-inspector-body">
      <div className="ed-inspector-head">
        <div className="ed-inspector-title">Workflow</div>
      </div>
      <p className="ed-muted ed-small">Select a node or an edge to edit it.</p>
      <IssueBox issues={other} />
      <Field label="Name" required error={fieldIssue("name")}>
        <TextInput value={meta.name} placeholder="my-workflow" onChange={(value) => onChange((current) => ({ ...current, name: String(value ?? "") }), "name")} />
      </Field>
      <Field label="Description">
        <TextInput
          testId="workflow-description"
          multiline
          value={meta.description}
          onChange={(value) => onChange((current) => ({ ...current, description: String(value ?? "") }), "description")}
        />
      </Field>

      <h4>Inputs</h4>
      {meta.inputs.length === 0 && <p className="ed-muted ed-small">None. Templates read inputs as {"{{ inputs.name }}"}.</p>}
      {meta.inputs.map((row, index) => (
        <div key={row.key} className="ed-input-row">
          <input
            aria-label="Input name"
            data-testid={`input-name-${index}`}
            className="ed-mono"
            value={row.name}
            placeholder="name"
            aria-invalid={(inputCounts.get(row.name) ?? 0) > 1 || !row.name ? true : undefined}
            onChange={(event) => setInput(row.key, (spec) => [event.target.value.trim(), spec], "name")}
          />
          <select
            aria-label="Input type"
            data-testid={`input-type-${index}`}
            value={row.spec.type ?? "any"}
            onChange={(event) => setInput(row.key, (spec, name) => [name, { ...spec, type: event.target.value }], "type")}
          >
            {INPUT_TYPES.map((type) => (
              <option key={type}>{type}</option>
            ))}
          </select>
          <label className="ed-inline-check" title="Required">
            <input
              type="checkbox"
              data-testid={`input-required-${index}`}
              checked={Boolean(row.spec.required)}
              onChange={(event) => setInput(row.key, (spec, name) => [name, { ...spec, required: event.target.checked }], "required")}
            />
            req.
          </label>
          <button
            type="button"
            className="ed-icon-button"
            aria-label={`Remove input ${row.name}`}
            onClick={() => onChange((current) => ({ ...current, inputs: current.inputs.filter((r) => r.key !== row.key) }), `input:${row.key}:remove`)}
          >
            ×
          </button>
        </div>
      ))}
      <ProblemLine problem={fieldIssue("inputs")} />
      <button
        type="button"
        className="ed-small-button"
        data-testid="add-input"
        onClick={() =>
          onChange((current) => {
            const taken = new Set(current.inputs.map((row) => row.name));
            let n = current.inputs.length + 1;
            while (taken.has(`input_${n}`)) n += 1;
            return { ...current, inputs: [...current.inputs, { key: uid("i"), name: `input_${n}`, spec: { type: "string", required: true } }] };
          }, "inputs:add")
        }
      >
        + Add input
      </button>

      <h4>Outputs</h4>
      {meta.outputs.length === 0 && <p className="ed-muted ed-small">None: the execution's outputs come from its output nodes.</p>}
      {meta.outputs.map((row, index) => (
        <div key={row.key} className="ed-output-row">
          <div className="ed-input-row">
            <input
              aria-label="Output name"
              data-testid={`output-name-${index}`}
              className="ed-mono"
              value={row.name}
              placeholder="name"
              aria-invalid={(outputCounts.get(row.name) ?? 0) > 1 || !row.name ? true : undefined}
              onChange={(event) =>
                onChange(
                  (current) => ({ ...current, outputs: current.outputs.map((r) => (r.key === row.key ? { ...r, name: event.target.value.trim() } : r)) }),
                  `output:${row.key}:name`,
                )
              }
            />
            <button
              type="button"
              className="ed-icon-button"
              aria-label={`Remove output ${row.name}`}
              onClick={() => onChange((current) => ({ ...current, outputs: current.outputs.filter((r) => r.key !== row.key) }), `output:${row.key}:remove`)}
            >
              ×
            </button>
          </div>
          <JsonInput
            testId={`output-value-${index}`}
            rows={1}
            value={row.value}
            placeholder="{{ node.field }}"
            onChange={(value) =>
              onChange((current) => ({ ...current, outputs: current.outputs.map((r) => (r.key === row.key ? { ...r, value } : r)) }), `output:${row.key}:value`)
            }
          />
        </div>
      ))}
      <ProblemLine problem={fieldIssue("outputs")} />
      <button
        type="button"
        className="ed-small-button"
        data-testid="add-output"
        onClick={() =>
          onChange(
            (current) => ({ ...current, outputs: [...current.outputs, { key: uid("o"), name: `output_${current.outputs.length + 1}`, value: "" }] }),
            "outputs:add",
          )
        }
      >
        + Add output
      </button>
    </div>
  );
}
