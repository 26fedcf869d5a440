// `{{ }}` autocomplete: typing `{{` in a field of the inspector offers what a template there
// can read — the workflow's inputs and the fields of the upstream nodes' outputs (from each
// node type's output schema) — and inserts the chosen one.
import { createContext, useContext, useRef, useState, type KeyboardEvent, type ReactNode } from "react";
import type { NodeTypeSpec } from "../lib/types";
import type { Doc } from "./model";

export interface Reference {
  /** What is inserted between `{{ ` and ` }}`, e.g. `fetch.status`. */
  path: string;
  /** Where it comes from, e.g. `http_request output` or `workflow input`. */
  source: string;
  type?: string;
}

export const References = createContext<Reference[]>([]);

function typeOf(schema: unknown): string | undefined {
  const type = (schema as { type?: unknown } | null)?.type;
  return typeof type === "string" ? type : Array.isArray(type) ? type.join(" | ") : undefined;
}

/** What a node's templates can reference: the workflow's inputs, then every node upstream of
 * it (nearest first) with the properties of its output schema. `nodeKey` null: every node
 * (the workflow's outputs are computed at the end). */
export function referencesFor(doc: Doc, nodeKey: string | null, types: Map<string, NodeTypeSpec>): Reference[] {
  const found: Reference[] = doc.meta.inputs
    .filter((row) => row.name)
    .map((row) => ({ path: `inputs.${row.name}`, source: "workflow input", type: row.spec.type }));
  let upstream: string[];
  if (nodeKey === null) {
    upstream = doc.nodes.map((node) => node.id);
  } else {
    const predecessors = new Map<string, string[]>();
    for (const edge of doc.edges) predecessors.set(edge.target, [...(predecessors.get(edge.target) ?? []), edge.source]);
    const seen = new Set([nodeKey]);
    upstream = [];
    for (let queue = [nodeKey]; queue.length; ) {
      const next: string[] = [];
      for (const key of queue) {
        for (const source of predecessors.get(key) ?? []) {
          if (seen.has(source)) continue;
          seen.add(source);
          upstream.push(source);
          next.push(source);
        }
      }
      queue = next;
    }
  }
  const byKey = new Map(doc.nodes.map((node) => [node.id, node]));
  for (const key of upstream) {
    const node = byKey.get(key);
    if (!node) continue;
    const { id, type, params } = node.data.def;
    const source = `${type} output`;
    const properties = types.get(type)?.output_schema?.properties ?? {};
    const names = Object.keys(properties);
    if (!names.length) found.push({ path: id, source });
    for (const name of names) found.push({ path: `${id}.${name}`, source, type: typeOf(properties[name]) });
    // A human_input node's data has the fields of the schema it asks for.
    const asked = (params?.schema as { properties?: Record<string, unknown> } | undefined)?.properties;
    if (type === "human_input" && asked && typeof asked === "object") {
      for (const [name, schema] of Object.entries(asked)) found.push({ path: `${id}.data.${name}`, source: "human input", type: typeOf(schema) });
    }
  }
  return found;
}

/** The reference being typed at the caret: after an unclosed `{{`, a dotted name or nothing. */
export function openReference(text: string, caret: number): { from: number; prefix: string } | null {
  const before = text.slice(0, caret);
  const open = before.lastIndexOf("{{");
  if (open < 0 || before.slice(open).includes("}}")) return null;
  const match = /^(\s*)([A-Za-z_][\w.]*)?$/.exec(before.slice(open + 2));
  if (!match) return null;
  return { from: open + 2, prefix: match[2] ?? "" };
}

type Editable = HTMLInputElement | HTMLTextAreaElement;

/** Autocomplete for one text field: `bind` goes on the input or textarea, `menu` after it. */
export function useReferenceAutocomplete(text: string, setText: (next: string) => void) {
  const references = useContext(References);
  const element = useRef<Editable | null>(null);
  const [query, setQuery] = useState<{ from: number; prefix: string; caret: number } | null>(null);
  const [active, setActive] = useState(0);

  const matches = query
    ? references
        .filter((reference) => reference.path.startsWith(query.prefix) && reference.path !== query.prefix)
        .concat(references.filter((reference) => !reference.path.startsWith(query.prefix) && query.prefix && reference.path.includes(query.prefix)))
        .slice(0, 12)
    : [];

  const look = () => {
    const target = element.current;
    if (!target || document.activeElement !== target) return setQuery(null);
    const caret = target.selectionStart ?? target.value.length;
    const found = openReference(target.value, caret);
    setQuery(found ? { ...found, caret } : null);
    setActive(0);
  };

  const choose = (reference: Reference) => {
    if (!query) return;
    const rest = text.slice(query.caret);
    // Closed already (`{{ fe| }}`): the name is completed and the caret goes past the `}}`.
    const closed = /^\s*\}\}/.test(rest);
    const inserted = ` ${reference.path} }}`;
    const next = text.slice(0, query.from) + inserted + (closed ? rest.replace(/^\s*\}\}/, "") : rest);
    const caret = query.from + inserted.length;
    setText(next);
    setQuery(null);
    window.requestAnimationFrame(() => {
      const target = element.current;
      if (!target) return;
      target.focus();
      target.setSelectionRange(caret, caret);
    });
  };

  const onKeyDown = (event: KeyboardEvent<Editable>) => {
    if (!matches.length) return;
    if (event.key === "ArrowDown" || event.key === "ArrowUp") {
      event.preventDefault();
      const step = event.key === "ArrowDown" ? 1 : -1;
      setActive((current) => (current + step + matches.length) % matches.length);
    } else if (event.key === "Enter" || event.key === "Tab") {
      event.preventDefault();
      choose(matches[Math.min(active, matches.length - 1)]);
    } else if (event.key === "Escape") {
      event.preventDefault();
      event.stopPropagation();
      setQuery(null);
    }
  };

  const bind = {
    ref: (node: Editable | null) => {
      element.current = node;
    },
    onKeyDown,
    onKeyUp: (event: KeyboardEvent<Editable>) => {
      if (!["ArrowDown", "ArrowUp", "Enter", "Tab", "Escape"].includes(event.key) || !matches.length) look();
    },
    onClick: look,
    onInput: () => window.requestAnimationFrame(look),
    onBlur: () => setQuery(null),
    "aria-autocomplete": "list" as const,
  };

  let menu: ReactNode = null;
  if (query && matches.length) {
    menu = (
      <ul className="ed-suggest" role="listbox" data-testid="reference-suggestions">
        {matches.map((reference, index) => (
          <li
            key={reference.path}
            role="option"
            aria-selected={index === active}
            className={index === active ? "active" : undefined}
            data-testid="reference-suggestion"
            data-path={reference.path}
            // Chosen on mousedown, before the field loses its focus.
            onMouseDown={(event) => {
              event.preventDefault();
              choose(reference);
            }}
          >
            <span className="ed-mono">{reference.path}</span>
            <span className="ed-suggest-source">
              {reference.source}
              {reference.type ? ` · ${reference.type}` : ""}
            </span>
          </li>
        ))}
      </ul>
    );
  }
  return { bind, menu };
}
