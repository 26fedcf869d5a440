// Node presets in the palette: each type lists its tenant's saved parameter sets
// (/api/v1/node-presets, services/gateway/routes/presets.py); a click adds a node of the type
// with the preset's params.
import { useEffect, useState } from "react";
import { api, type Page } from "../lib/api";
import "./History.css";

export interface NodePreset {
  id: string;
  version: number;
  node_type: string;
  name: string;
  description: string;
  params: Record<string, unknown>;
}

/** The tenant's presets by node type (current versions); empty until loaded or when the
 * list cannot be read (the palette still works without them). */
export function usePresets(): Map<string, NodePreset[]> {
  const [byType, setByType] = useState<Map<string, NodePreset[]>>(new Map());
  useEffect(() => {
    let live = true;
    api<Page<NodePreset>>("/api/v1/node-presets?page_size=100")
      .then((page) => {
        if (!live) return;
        const grouped = new Map<string, NodePreset[]>();
        for (const preset of page.items) {
          grouped.set(preset.node_type, [...(grouped.get(preset.node_type) ?? []), preset]);
        }
        setByType(grouped);
      })
      .catch(() => undefined);
    return () => {
      live = false;
    };
  }, []);
  return byType;
}

export function PresetItems({
  presets,
  onAdd,
}: {
  presets: NodePreset[] | undefined;
  onAdd: (type: string, params: Record<string, unknown>) => void;
}) {
  if (!presets?.length) return null;
  return (
    <div className="ed-palette-presets" data-testid={`presets-${presets[0].node_type}`}>
      {presets.map((preset) => (
        <button
          key={preset.id}
          type="button"
          className="ed-palette-preset"
          data-testid={`preset-${preset.id}`}
          title={`${preset.description || preset.name} (preset v${preset.version})\nClick to add with these params.`}
          onClick={() => onAdd(preset.node_type, structuredClone(preset.params))}
        >
          ↳ {preset.name}
        </button>
      ))}
    </div>
  );
}
