// Import (a file or pasted JSON/YAML) and the keyboard shortcut help.
import { useEffect, useRef, useState, type ReactNode } from "react";
import YAML from "yaml";
import type { Definition } from "../lib/types";
import { definitionProblem } from "./model";

function Modal({ title, testId, onClose, children }: { title: string; testId: string; onClose: () => void; children: ReactNode }) {
  return (
    <div className="ed-modal-backdrop" onMouseDown={(event) => event.target === event.currentTarget && onClose()}>
      <div className="ed-modal" role="dialog" aria-modal="true" aria-label={title} data-testid={testId}>
        <div className="ed-modal-head">
          <h2>{title}</h2>
          <button type="button" className="ed-icon-button" aria-label="Close" onClick={onClose}>
            ×
          </button>
        </div>
        {children}
      </div>
    </div>
  );
}

/** A definition from JSON or YAML text, or why the text is not one. */
export function parseDefinition(text: string): { definition: Definition } | { error: string } {
  const trimmed = text.trim();
  if (!trimmed) return { error: "Paste a definition or choose a file." };
  let value: unknown;
  try {
    value = JSON.parse(trimmed);
  } catch (jsonError) {
    if (trimmed.startsWith("{")) return { error: `Invalid JSON: ${(jsonError as Error).message}` };
    try {
      value = YAML.parse(trimmed);
    } catch (yamlError) {
      return { error: `Invalid YAML: ${(yamlError as Error).message.split("\n")[0]}` };
    }
  }
  const problem = definitionProblem(value);
  return problem ? { error: problem } : { definition: value as Definition };
}

export function ImportDialog({ onImport, onClose }: { onImport: (definition: Definition) => void; onClose: () => void }) {
  const [text, setText] = useState("");
  const [error, setError] = useState<string | null>(null);
  const [fileName, setFileName] = useState<string | null>(null);
  const area = useRef<HTMLTextAreaElement>(null);
  useEffect(() => area.current?.focus(), []);
  const apply = () => {
    const parsed = parseDefinition(text);
    if ("error" in parsed) setError(parsed.error);
    else onImport(parsed.definition);
  };
  return (
    <Modal title="Import a definition" testId="import-dialog" onClose={onClose}>
      <p className="ed-muted">JSON or YAML, as the API accepts it. It replaces the graph on the canvas (Ctrl+Z brings it back).</p>
      <div className="ed-file-row">
        <label className="ed-file-button">
          Choose file…
          <input
            type="file"
            data-testid="import-file"
            accept=".json,.yaml,.yml,application/json,application/yaml,text/yaml"
            onChange={async (event) => {
              const file = event.target.files?.[0];
              if (!file) return;
              setFileName(file.name);
              setText(await file.text());
              setError(null);
            }}
          />
        </label>
        <span className="ed-muted">{fileName ?? "or paste below"}</span>
      </div>
      <textarea
        ref={area}
        className="ed-code ed-import-text"
        data-testid="import-text"
        spellCheck={false}
        placeholder={"name: hello\nnodes:\n  - id: start\n    type: input\n…"}
        value={text}
        onChange={(event) => {
          setText(event.target.value);
          setError(null);
        }}
        onKeyDown={(event) => {
          if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) apply();
        }}
      />
      {error && (
        <p className="error" data-testid="import-error">
          {error}
        </p>
      )}
      <div className="ed-modal-actions">
        <button type="button" onClick={onClose}>
          Cancel
        </button>
        <button type="button" className="primary" data-testid="import-apply" onClick={apply}>
          Import
        </button>
      </div>
    </Modal>
  );
}

const MOD = /Mac|iPhone|iPad/.test(navigator.platform) ? "⌘" : "Ctrl";

export const SHORTCUTS: [string, string][] = [
  ["Delete / Backspace", "Delete the selected nodes and edges"],
  [`${MOD}+S`, "Save a new version"],
  [`${MOD}+Z`, "Undo"],
  [`${MOD}+Shift+Z / ${MOD}+Y`, "Redo"],
  [`${MOD}+C / ${MOD}+V`, "Copy / paste the selected nodes (and the edges between them)"],
  [`${MOD}+D`, "Duplicate the selected nodes"],
  [`${MOD}+A`, "Select all"],
  ["Arrow keys", "Move the selected nodes by 10 px"],
  ["Shift+Arrow keys", "Move the selected nodes by 50 px"],
  ["L", "Auto-layout"],
  ["F", "Fit the graph in view"],
  ["Esc", "Clear the selection, close dialogs"],
  ["Shift+drag", "Select several nodes"],
  ["?", "This help"],
];

export function HelpDialog({ onClose }: { onClose: () => void }) {
  return (
    <Modal title="Keyboard shortcuts" testId="shortcut-help" onClose={onClose}>
      <table className="ed-shortcuts">
        <tbody>
          {SHORTCUTS.map(([keys, what]) => (
            <tr key={keys}>
              <td>
                {keys.split(" / ").map((combo, index) => (
                  <span key={combo}>
                    {index > 0 && " or "}
                    <kbd>{combo}</kbd>
                  </span>
                ))}
              </td>
              <td>{what}</td>
            </tr>
          ))}
        </tbody>
      </table>
      <p className="ed-muted ed-small">Shortcuts other than {MOD}+S do nothing while you type in a field.</p>
    </Modal>
  );
}
