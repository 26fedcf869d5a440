// Node types by category, searchable; drag one onto the canvas or click it to add it.
import { Fragment, useMemo, useState } from "react";
import type { NodeTypeSpec } from "../lib/types";
import { TypeBadge } from "./NodeCard";
import { PresetItems, usePresets } from "./PalettePresets";

export const DRAG_MIME = "application/x-heddle-node-type";

const CATEGORY_ORDER = ["core", "flow", "ai", "integration", "human"];
const CATEGORY_TITLES: Record<string, string> = {
  core: "Core",
  flow: "Flow control",
  ai: "AI",
  integration: "Integrations",
  human: "Human",
};

export function Palette({
  types,
  error,
  onAdd,
  onAddPreset,
}: {
  types: NodeTypeSpec[];
  error: string | null;
  onAdd: (type: string) => void;
  onAddPreset?: (type: string, params: Record<string, unknown>) => void;
}) {
  const [query, setQuery] = useState("");
  const presets = usePresets();
  const groups = useMemo(() => {
    const needle = query.trim().toLowerCase();
    const matching = types.filter(
      (spec) =>
        !needle ||
        spec.type.toLowerCase().includes(needle) ||
        spec.title.toLowerCase().includes(needle) ||
        spec.description.toLowerCase().includes(needle),
    );
    const byCategory = new Map<string, NodeTypeSpec[]>();
    for (const spec of matching) {
      const list = byCategory.get(spec.category) ?? [];
      list.push(spec);
      byCategory.set(spec.category, list);
    }
    const rank = (category: string) => {
      const at = CATEGORY_ORDER.indexOf(category);
      return at < 0 ? CATEGORY_ORDER.length : at;
    };
    return [...byCategory.entries()].sort(([a], [b]) => rank(a) - rank(b) || a.localeCompare(b));
  }, [types, query]);

  return (
    <aside className="ed-palette" aria-label="Node types">
      <input
        className="ed-search"
        type="search"
        placeholder="Search nodes…"
        aria-label="Search node types"
        data-testid="palette-search"
        value={query}
        onChange={(event) => setQuery(event.target.value)}
      />
      <div className="ed-palette-list">
        {error && <p className="error">{error}</p>}
        {!error && types.length === 0 && <p className="ed-muted">Loading node types…</p>}
        {types.length > 0 && groups.length === 0 && <p className="ed-muted">No node type matches.</p>}
        {groups.map(([category, specs]) => (
          <section key={category}>
            <h3>{CATEGORY_TITLES[category] ?? category}</h3>
            {specs.map((spec) => (
              <Fragment key={spec.type}>
              <button
                type="button"
                className="ed-palette-item"
                data-testid={`palette-${spec.type}`}
                draggable
                title={`${spec.description}\nDrag onto the canvas, or click to add.`}
                onDragStart={(event) => {
                  event.dataTransfer.setData(DRAG_MIME, spec.type);
                  event.dataTransfer.setData("text/plain", spec.type);
                  event.dataTransfer.effectAllowed = "copy";
                }}
                onClick={() => onAdd(spec.type)}
              >
                <TypeBadge type={spec.type} category={spec.category} />
                <span className="ed-palette-names">
                  <span className="ed-palette-title">{spec.title}</span>
                  <span className="ed-palette-type">{spec.type}</span>
                </span>
              </button>
              {onAddPreset && <PresetItems presets={presets.get(spec.type)} onAdd={onAddPreset} />}
              </Fragment>
            ))}
          </section>
        ))}
      </div>
      <p className="ed-palette-tip">Drag onto the canvas or click to add. Press ? for shortcuts.</p>
    </aside>
  );
}
