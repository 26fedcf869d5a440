// The workflow editor: palette, canvas, inspector, live validation, save as a new version,
// import/export, auto-layout, undo/redo, copy/paste and keyboard shortcuts.
import { useCallback, useEffect, useMemo, useRef, useState, type DragEvent } from "react";
import {
  Background,
  Controls,
  MarkerType,
  MiniMap,
  ReactFlow,
  ReactFlowProvider,
  applyEdgeChanges,
  applyNodeChanges,
  useReactFlow,
  type Connection,
  type EdgeChange,
  type IsValidConnection,
  type NodeChange,
  type Viewport,
} from "@xyflow/react";
import YAML from "yaml";
import { ApiError, api } from "../lib/api";
import { defaultPortRank, layout, NODE_WIDTH } from "../lib/layout";
import { navigate } from "../lib/router";
import { useTheme } from "../lib/theme";
import type { Definition, NodeDef, NodeTypeSpec, Workflow } from "../lib/types";
import { HelpDialog, ImportDialog } from "./Dialogs";
import { useHistory, type Saved } from "./history";
import { EdgeInspector, NodeInspector, WorkflowPanel } from "./Inspector";
import { HistoryButton } from "./HistoryPanel";
import { IssuesPanel } from "./IssuesPanel";
import { useCatalog } from "./catalog";
import { useLastRun } from "./LastRun";
import { References, referencesFor } from "./references";
import {
  DEFAULT_IN,
  DEFAULT_OUT,
  EMPTY_DOC,
  clipDefinition,
  copySelection,
  docFromDefinition,
  freshNodeId,
  nodeDefId,
  pasteClip,
  portsOf,
  renameNode,
  shiftClip,
  sourceHandleOf,
  targetHandleOf,
  toDefinition,
  uid,
  type Clip,
  type Doc,
  type FlowEdge,
  type FlowNode,
  type Meta,
} from "./model";
import { CanvasInfo, NodeCard, type CanvasContext } from "./NodeCard";
import { DRAG_MIME, Palette } from "./Palette";
import { BLANK_KEY, useValidation, validationKey, type LocatedIssue, type ValidationState } from "./validation";
import "./editor.css";

const NODE_TYPES = { heddle: NodeCard };
const MIN_ZOOM = 0.05;
const MAX_FIT_ZOOM = 1.2;
const FIT_PADDING = 0.08;

/** What a newly created workflow's editor hands to the editor of `#/workflows/<id>`, which
 * mounts afresh after the save: the same graph, history and viewport, without a reload. */
interface Handoff {
  workflowId: string;
  doc: Doc;
  history: Saved;
  version: number;
  savedKey: string;
  viewport: Viewport;
  validation: ValidationState;
}
let handoff: Handoff | null = null;

let nodeTypesCache: NodeTypeSpec[] | null = null;

/** What Ctrl+C copied: kept for the session, so it can be pasted into another workflow. */
let clipboard: Clip | null = null;

/** How far an arrow key moves the selected nodes (with Shift: the larger step). */
const NUDGE = 10;
const NUDGE_SHIFT = 50;
const ARROWS: Record<string, [number, number]> = { ArrowLeft: [-1, 0], ArrowRight: [1, 0], ArrowUp: [0, -1], ArrowDown: [0, 1] };

export function EditorPage({ workflowId }: { workflowId: string | null }) {
  return (
    <ReactFlowProvider>
      <Editor workflowId={workflowId} />
    </ReactFlowProvider>
  );
}

/** Minimap colours of the palette categories (the type badges' colours, editor.css). */
const CATEGORY_COLORS: Record<string, string> = { core: "#475467", flow: "#7048e8", ai: "#0c8599", integration: "#1c7ed6", human: "#e8590c" };

function definitionKey(doc: Doc): string {
  return JSON.stringify(toDefinition(doc));
}

function errorText(error: unknown): string {
  if (error instanceof ApiError) return `${error.message} (${error.status})`;
  return error instanceof Error ? error.message : String(error);
}

function isTyping(target: EventTarget | null): boolean {
  if (!(target instanceof HTMLElement)) return false;
  if (target.isContentEditable || target instanceof HTMLTextAreaElement || target instanceof HTMLSelectElement) return true;
  return target instanceof HTMLInputElement && !["checkbox", "radio", "button", "submit", "file"].includes(target.type);
}

function download(name: string, text: string, type: string): void {
  const url = URL.createObjectURL(new Blob([text], { type }));
  const link = document.createElement("a");
  link.href = url;
  link.download = name;
  document.body.append(link);
  link.click();
  link.remove();
  window.setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

function Editor({ workflowId }: { workflowId: string | null }) {
  const flow = useReactFlow<FlowNode, FlowEdge>();
  const [inherited] = useState(() => (handoff && handoff.workflowId === workflowId ? handoff : null));
  useEffect(() => {
    handoff = null;
  }, []);
  const history = useHistory(() => inherited?.doc ?? EMPTY_DOC, inherited?.history);
  const { doc, docRef, update } = history;

  const [types, setTypes] = useState<NodeTypeSpec[]>(nodeTypesCache ?? []);
  const [typesError, setTypesError] = useState<string | null>(null);
  const [loading, setLoading] = useState(Boolean(workflowId) && !inherited);
  const [loadError, setLoadError] = useState<string | null>(null);
  const [version, setVersion] = useState<number | null>(inherited?.version ?? null);
  const [savedKey, setSavedKey] = useState(() => inherited?.savedKey ?? definitionKey(EMPTY_DOC));
  const [saving, setSaving] = useState(false);
  const [notice, setNotice] = useState<{ kind: "info" | "error"; text: string } | null>(null);
  const [dialog, setDialog] = useState<"import" | "help" | null>(null);
  /** On a narrow screen the palette and the inspector are drawers over the canvas. */
  const [drawer, setDrawer] = useState<"palette" | "inspector" | null>(null);
  const savingRef = useRef(false);
  const needsLayout = useRef(false);
  const canvasRef = useRef<HTMLDivElement>(null);
  const needsFit = useRef(false);
  /** The layout about to be computed is part of the loaded version, not a change to save. */
  const layoutIsBaseline = useRef(false);

  const typeMap = useMemo(() => new Map(types.map((spec) => [spec.type, spec])), [types]);
  const catalog = useCatalog();
  const { theme } = useTheme();
  const lastRun = useLastRun(workflowId);
  // An untouched blank workflow is not checked: it would only be told it has no name yet.
  const blank = validationKey(doc) === BLANK_KEY;
  const validation = useValidation(doc, !loading && !loadError && !blank, inherited?.validation);
  const currentKey = definitionKey(doc);
  const dirty = currentKey !== savedKey;

  // ---------------------------------------------------------------- loading
  useEffect(() => {
    if (nodeTypesCache) return;
    api<{ node_types: NodeTypeSpec[] }>("/api/v1/node-types")
      .then((reply) => {
        nodeTypesCache = reply.node_types;
        setTypes(reply.node_types);
      })
      .catch((error) => setTypesError(`Could not load node types: ${errorText(error)}`));
  }, []);

  useEffect(() => {
    if (!workflowId || inherited) return;
    let live = true;
    api<Workflow>(`/api/v1/workflows/${encodeURIComponent(workflowId)}`)
      .then((workflow) => {
        if (!live) return;
        const loaded = docFromDefinition(workflow.definition);
        needsLayout.current = workflow.definition.nodes.some((node) => !node.position);
        layoutIsBaseline.current = needsLayout.current;
        needsFit.current = true;
        history.reset(loaded);
        setVersion(workflow.version);
        setSavedKey(definitionKey(loaded));
        setLoading(false);
      })
      .catch((error) => {
        if (!live) return;
        setLoadError(`Could not open this workflow: ${errorText(error)}`);
        setLoading(false);
      });
    return () => {
      live = false;
    };
    // Loaded once per workflow: `history` is a new object on every render.
  }, [workflowId]);

  useEffect(() => {
    if (!notice || notice.kind === "error") return;
    const timer = window.setTimeout(() => setNotice(null), 4000);
    return () => window.clearTimeout(timer);
  }, [notice]);

  useEffect(() => {
    if (!dirty) return;
    const warn = (event: BeforeUnloadEvent) => event.preventDefault();
    // In-app links (the nav, "← Workflows") change the hash: ask before leaving too.
    const guard = (event: MouseEvent) => {
      const link = (event.target as Element | null)?.closest?.("a[href^='#']");
      if (link && !window.confirm("Leave the editor? Your unsaved changes will be lost.")) {
        event.preventDefault();
        event.stopPropagation();
      }
    };
    window.addEventListener("beforeunload", warn);
    document.addEventListener("click", guard, true);
    return () => {
      window.removeEventListener("beforeunload", warn);
      document.removeEventListener("click", guard, true);
    };
  }, [dirty]);

  // ---------------------------------------------------------------- graph edits
  /** Fits the whole graph in view (down to the canvas's smallest zoom: the minimap and the
   * zoom controls are there for a closer look), never enlarged past a comfortable size. */
  const fitSoon = useCallback(
    (duration = 250) => {
      window.setTimeout(() => {
        if (!flow.getNodes().length) return;
        void flow.fitView({ padding: FIT_PADDING, minZoom: MIN_ZOOM, maxZoom: MAX_FIT_ZOOM, duration });
      }, 30);
    },
    [flow],
  );

  const autoLayout = useCallback(
    (record = true) => {
      const current = docRef.current;
      if (!current.nodes.length) return;
      // Each node's targets top to bottom in the order of its output ports (a condition's
      // `true` branch above its `false` one), so that the edges leaving it do not cross.
      const ports = new Map(current.nodes.map((node) => [node.id, portsOf(node.data.def, typeMap.get(node.data.def.type)).outputs]));
      const placed = layout(
        current.nodes,
        current.edges.map((edge) => ({ source: edge.source, target: edge.target, port: sourceHandleOf(edge) })),
        (source, port) => {
          const index = ports.get(source)?.indexOf(port) ?? -1;
          return index >= 0 ? index : defaultPortRank(port);
        },
      );
      update((d) => ({ ...d, nodes: d.nodes.map((node, index) => ({ ...node, position: placed[index].position })) }), record);
      fitSoon();
    },
    [docRef, update, fitSoon, typeMap],
  );

  // A graph without positions is laid out, and a loaded one fitted, once its nodes are measured.
  const measured = doc.nodes.length > 0 && doc.nodes.every((node) => node.measured?.width && node.measured?.height);
  useEffect(() => {
    if (!measured) return;
    if (needsLayout.current) {
      needsLayout.current = false;
      needsFit.current = false;
      autoLayout(false);
      if (layoutIsBaseline.current) {
        layoutIsBaseline.current = false;
        setSavedKey(definitionKey(docRef.current));
      }
    } else if (needsFit.current) {
      needsFit.current = false;
      fitSoon(0);
    }
  }, [measured, autoLayout, fitSoon, docRef, doc.nodes]);

  const addNode = useCallback(
    (type: string, at?: { x: number; y: number }, preset?: Record<string, unknown>) => {
      let position = at;
      if (!position) {
        // A click adds the node to the right of the selected one (the usual next step), else
        // in the middle of the view; below any node already there.
        const anchor = docRef.current.nodes.find((node) => node.selected);
        if (anchor) {
          position = { x: anchor.position.x + (anchor.measured?.width ?? NODE_WIDTH) + 60, y: anchor.position.y };
        } else {
          const box = canvasRef.current?.getBoundingClientRect();
          const center = box
            ? flow.screenToFlowPosition({ x: box.left + box.width / 2, y: box.top + box.height / 2 })
            : { x: 0, y: 0 };
          position = { x: center.x - NODE_WIDTH / 2, y: center.y - 40 };
        }
        const taken = (x: number, y: number) =>
          docRef.current.nodes.some((node) => Math.abs(node.position.x - x) < 120 && Math.abs(node.position.y - y) < 60);
        while (taken(position.x, position.y)) position = { x: position.x, y: position.y + 90 };
      }
      const spec = typeMap.get(type);
      const params: Record<string, unknown> = {};
      for (const name of spec?.params_schema.required ?? []) {
        const fallback = spec?.params_schema.properties?.[name]?.default;
        if (fallback !== undefined) params[name] = fallback;
      }
      if (preset) Object.assign(params, preset);
      const snapped = { x: Math.round(position.x / 10) * 10, y: Math.round(position.y / 10) * 10 };
      if (!at) {
        // Pan to a node added out of view (to the right of a node near the edge).
        const box = canvasRef.current?.getBoundingClientRect();
        const topLeft = flow.flowToScreenPosition(snapped);
        const bottomRight = flow.flowToScreenPosition({ x: snapped.x + NODE_WIDTH, y: snapped.y + 60 });
        if (box && (topLeft.x < box.left || topLeft.y < box.top || bottomRight.x > box.right || bottomRight.y > box.bottom)) {
          void flow.setCenter(snapped.x + NODE_WIDTH / 2, snapped.y + 30, { zoom: flow.getZoom(), duration: 250 });
        }
      }
      update((d) => {
        const id = freshNodeId(type, d.nodes.map((node) => node.data.def.id));
        const node: FlowNode = { id: uid("n"), type: "heddle", position: snapped, selected: true, data: { def: { id, type, params } } };
        return {
          ...d,
          nodes: [...d.nodes.map((n) => (n.selected ? { ...n, selected: false } : n)), node],
          edges: d.edges.map((e) => (e.selected ? { ...e, selected: false } : e)),
        };
      });
    },
    [flow, typeMap, update, docRef],
  );

  const deleteSelection = useCallback(() => {
    update((d) => {
      const removed = new Set(d.nodes.filter((node) => node.selected).map((node) => node.id));
      const edges = d.edges.filter((edge) => !edge.selected && !removed.has(edge.source) && !removed.has(edge.target));
      if (!removed.size && edges.length === d.edges.length) return d;
      return { ...d, nodes: d.nodes.filter((node) => !removed.has(node.id)), edges };
    });
  }, [update]);

  /** Copies the selected nodes and the edges between them; false when none is selected. */
  const copy = useCallback(() => {
    const clip = copySelection(docRef.current);
    if (!clip) return false;
    clipboard = clip;
    // Also to the system clipboard as a definition fragment, where the browser allows it
    // (it may refuse, e.g. headless or without focus): the in-app clipboard is what pastes.
    try {
      void navigator.clipboard?.writeText(JSON.stringify(clipDefinition(clip), null, 2)).catch(() => undefined);
    } catch {
      // No clipboard API here.
    }
    return true;
  }, [docRef]);

  /** Pastes what was copied, as one undo step; false when nothing was. */
  const paste = useCallback(() => {
    const clip = clipboard;
    if (!clip) return false;
    update((d) => pasteClip(d, clip));
    // Pasting again lands beside the last copy rather than on top of it.
    clipboard = shiftClip(clip);
    return true;
  }, [update]);

  /** Copy and paste of the selection in one step, leaving the clipboard as it was. */
  const duplicate = useCallback(() => {
    const clip = copySelection(docRef.current);
    if (!clip) return false;
    update((d) => pasteClip(d, clip));
    return true;
  }, [docRef, update]);

  /** Moves the selected nodes; the presses of one burst are one undo step. */
  const nudge = useCallback(
    (dx: number, dy: number) => {
      const selected = docRef.current.nodes.filter((node) => node.selected).map((node) => node.id);
      if (!selected.length) return false;
      update(
        (d) => ({
          ...d,
          nodes: d.nodes.map((node) => (node.selected ? { ...node, position: { x: node.position.x + dx, y: node.position.y + dy } } : node)),
        }),
        `nudge:${selected.join(",")}`,
      );
      return true;
    },
    [docRef, update],
  );

  const selectAll = useCallback(
    () =>
      update(
        (d) => ({
          ...d,
          nodes: d.nodes.map((node) => (node.selected ? node : { ...node, selected: true })),
          edges: d.edges.map((edge) => (edge.selected ? edge : { ...edge, selected: true })),
        }),
        false,
      ),
    [update],
  );

  const select = useCallback(
    (nodeKey: string | null, edgeKey: string | null = null) =>
      update(
        (d) => ({
          ...d,
          nodes: d.nodes.map((node) => (Boolean(node.selected) === (node.id === nodeKey) ? node : { ...node, selected: node.id === nodeKey })),
          edges: d.edges.map((edge) => (Boolean(edge.selected) === (edge.id === edgeKey) ? edge : { ...edge, selected: edge.id === edgeKey })),
        }),
        false,
      ),
    [update],
  );

  const onNodesChange = useCallback(
    (changes: NodeChange<FlowNode>[]) => update((d) => ({ ...d, nodes: applyNodeChanges(changes, d.nodes) }), false),
    [update],
  );
  const onEdgesChange = useCallback(
    (changes: EdgeChange<FlowEdge>[]) => update((d) => ({ ...d, edges: applyEdgeChanges(changes, d.edges) }), false),
    [update],
  );
  const onConnect = useCallback(
    (connection: Connection) =>
      update((d) => {
        const edge: FlowEdge = {
          id: uid("e"),
          source: connection.source,
          target: connection.target,
          data: {
            extra: {},
            sourcePort: connection.sourceHandle && connection.sourceHandle !== DEFAULT_OUT ? connection.sourceHandle : undefined,
            targetPort: connection.targetHandle && connection.targetHandle !== DEFAULT_IN ? connection.targetHandle : undefined,
          },
        };
        return { ...d, edges: [...d.edges, edge] };
      }),
    [update],
  );
  const isValidConnection: IsValidConnection<FlowEdge> = useCallback(
    (connection) =>
      connection.source !== connection.target &&
      !docRef.current.edges.some(
        (edge) =>
          edge.source === connection.source &&
          edge.target === connection.target &&
          sourceHandleOf(edge) === (connection.sourceHandle ?? DEFAULT_OUT) &&
          targetHandleOf(edge) === (connection.targetHandle ?? DEFAULT_IN),
      ),
    [docRef],
  );

  /** A drag that moved nothing (a click) leaves no undo step. */
  const settleDrag = () =>
    history.settle((before, after) => before.nodes.every((node, index) => after.nodes[index]?.position === node.position));

  const onDragOver = (event: DragEvent) => {
    if (!event.dataTransfer.types.includes(DRAG_MIME)) return;
    event.preventDefault();
    event.dataTransfer.dropEffect = "copy";
  };
  const onDrop = (event: DragEvent) => {
    const type = event.dataTransfer.getData(DRAG_MIME);
    if (!type) return;
    event.preventDefault();
    const at = flow.screenToFlowPosition({ x: event.clientX, y: event.clientY });
    addNode(type, { x: at.x - NODE_WIDTH / 2, y: at.y - 30 });
  };

  const updateNode = useCallback(
    (nodeKey: string, change: (def: NodeDef) => NodeDef, historyKey: string) =>
      update((d) => ({ ...d, nodes: d.nodes.map((node) => (node.id === nodeKey ? { ...node, data: { def: change(node.data.def) } } : node)) }), historyKey),
    [update],
  );
  const updateMeta = useCallback(
    (change: (meta: Meta) => Meta, historyKey: string) => update((d) => ({ ...d, meta: change(d.meta) }), `meta:${historyKey}`),
    [update],
  );

  const importDefinition = (definition: Definition) => {
    const imported = docFromDefinition(definition);
    needsLayout.current = definition.nodes.some((node) => !node.position);
    update(() => imported);
    setDialog(null);
    setNotice({ kind: "info", text: `Imported ${imported.nodes.length} nodes and ${imported.edges.length} edges.` });
    needsFit.current = !needsLayout.current;
  };

  const exportAs = (format: "json" | "yaml") => {
    const definition = toDefinition(docRef.current);
    const base = (definition.name || "workflow").replace(/[^A-Za-z0-9._-]+/g, "-");
    if (format === "json") download(`${base}.json`, `${JSON.stringify(definition, null, 2)}\n`, "application/json");
    else download(`${base}.yaml`, YAML.stringify(definition), "application/yaml");
  };

  // ---------------------------------------------------------------- save and run
  /** Validates, then saves a new version if anything changed; the workflow id, or null. */
  const save = useCallback(
    async (stay = true): Promise<string | null> => {
      if (savingRef.current) return null;
      const snapshot = docRef.current;
      const definition = toDefinition(snapshot);
      const key = JSON.stringify(definition);
      if (workflowId && key === savedKey) return workflowId;
      savingRef.current = true;
      setSaving(true);
      try {
        // Never send an invalid definition: the gateway would answer 422.
        const report = await validation.validate(snapshot);
        if (!report) {
          setNotice({ kind: "error", text: "Not saved: the definition could not be validated." });
          return null;
        }
        const errors = report.issues.filter((issue) => issue.severity !== "warning").length;
        if (!report.valid) {
          setNotice({ kind: "error", text: `Not saved: fix ${errors} problem${errors === 1 ? "" : "s"} first (listed below).` });
          return null;
        }
        const saved = workflowId
          ? await api<Workflow>(`/api/v1/workflows/${encodeURIComponent(workflowId)}`, { method: "PUT", body: definition })
          : await api<Workflow>("/api/v1/workflows", { method: "POST", body: definition });
        setVersion(saved.version);
        setSavedKey(key);
        setNotice({ kind: "info", text: `Saved version ${saved.version}.` });
        if (!workflowId && stay) {
          handoff = {
            workflowId: saved.id,
            doc: docRef.current,
            history: history.saved(),
            version: saved.version,
            savedKey: key,
            viewport: flow.getViewport(),
            validation: validation.latestState(),
          };
          navigate(`/workflows/${saved.id}`);
        }
        return saved.id;
      } catch (error) {
        setNotice({ kind: "error", text: `Save failed: ${errorText(error)}` });
        return null;
      } finally {
        savingRef.current = false;
        setSaving(false);
      }
    },
    [docRef, workflowId, savedKey, validation, history, flow],
  );

  const run = async () => {
    const id = await save(false);
    if (id) navigate(`/workflows/${id}/run`);
  };

  // ---------------------------------------------------------------- keyboard
  const shortcuts = { save, deleteSelection, autoLayout, undo: history.undo, redo: history.redo, select, selectAll, copy, paste, duplicate, nudge, fit: () => fitSoon(), dialog, setDialog };
  const keys = useRef(shortcuts);
  keys.current = shortcuts;
  useEffect(() => {
    const onKey = (event: KeyboardEvent) => {
      const k = keys.current;
      const mod = event.ctrlKey || event.metaKey;
      const key = event.key.toLowerCase();
      if (mod && key === "s") {
        event.preventDefault();
        void k.save();
        return;
      }
      if (k.dialog) {
        if (event.key === "Escape") k.setDialog(null);
        return;
      }
      if (isTyping(event.target) || event.altKey) return;
      if (mod && key === "z") {
        event.preventDefault();
        if (event.shiftKey) k.redo();
        else k.undo();
      } else if (mod && key === "y") {
        event.preventDefault();
        k.redo();
      } else if (mod && key === "a") {
        event.preventDefault();
        k.selectAll();
      } else if (mod && key === "c") {
        // Text selected on the page (an issue's message) copies as usual.
        if (window.getSelection()?.toString()) return;
        if (k.copy()) event.preventDefault();
      } else if (mod && key === "v") {
        if (k.paste()) event.preventDefault();
      } else if (mod && key === "d") {
        event.preventDefault();
        k.duplicate();
      } else if (mod) {
        return;
      } else if (event.key === "Delete" || event.key === "Backspace") {
        event.preventDefault();
        k.deleteSelection();
      } else if (key === "l") {
        k.autoLayout();
      } else if (key === "f") {
        k.fit();
      } else if (event.key === "?") {
        k.setDialog("help");
      } else if (event.key === "Escape") {
        k.select(null);
      }
    };
    // Arrow keys move the selected nodes when the canvas, a button or nothing has the focus.
    // Handled before the event reaches React Flow, whose own arrow moves are not recorded.
    const onArrow = (event: KeyboardEvent) => {
      const k = keys.current;
      const step = ARROWS[event.key];
      if (!step || k.dialog || event.ctrlKey || event.metaKey || event.altKey || isTyping(event.target)) return;
      const target = event.target as Node | null;
      if (target !== document.body && !(target instanceof HTMLButtonElement) && !canvasRef.current?.contains(target)) return;
      const distance = event.shiftKey ? NUDGE_SHIFT : NUDGE;
      if (!k.nudge(step[0] * distance, step[1] * distance)) return;
      event.preventDefault();
      event.stopPropagation();
    };
    window.addEventListener("keydown", onArrow, true);
    window.addEventListener("keydown", onKey);
    return () => {
      window.removeEventListener("keydown", onArrow, true);
      window.removeEventListener("keydown", onKey);
    };
  }, []);

  // ---------------------------------------------------------------- what the canvas shows
  const issues = validation.state.issues;
  const canvasInfo: CanvasContext = useMemo(() => {
    const nodeIssues = new Map<string, LocatedIssue[]>();
    for (const issue of issues) {
      if (!issue.nodeKey) continue;
      const list = nodeIssues.get(issue.nodeKey) ?? [];
      list.push(issue);
      nodeIssues.set(issue.nodeKey, list);
    }
    const usedPorts: CanvasContext["usedPorts"] = new Map();
    const entry = (key: string) => {
      let found = usedPorts.get(key);
      if (!found) usedPorts.set(key, (found = { inputs: new Set(), outputs: new Set() }));
      return found;
    };
    for (const edge of doc.edges) {
      entry(edge.source).outputs.add(sourceHandleOf(edge));
      entry(edge.target).inputs.add(targetHandleOf(edge));
    }
    return { types: typeMap, nodeIssues, usedPorts };
  }, [issues, doc.edges, typeMap]);

  const minimapColor = useCallback(
    (node: FlowNode) => (canvasInfo.nodeIssues.get(node.id)?.some((issue) => issue.severity !== "warning") ? "#e03131" : (CATEGORY_COLORS[typeMap.get(node.data.def.type)?.category ?? ""] ?? "#98a2b3")),
    [canvasInfo, typeMap],
  );

  const renderedEdges = useMemo(() => {
    const bad = new Map<string, "error" | "warning">();
    for (const issue of issues) {
      if (!issue.edgeKey) continue;
      if (issue.severity !== "warning" || !bad.has(issue.edgeKey)) bad.set(issue.edgeKey, issue.severity === "warning" ? "warning" : "error");
    }
    const ids = new Set(doc.nodes.map((node) => node.id));
    return doc.edges
      .filter((edge) => ids.has(edge.source) && ids.has(edge.target))
      .map((edge) => {
        const problem = bad.get(edge.id);
        const color = problem === "error" ? "#e03131" : problem === "warning" ? "#f08c00" : edge.selected ? "#3b5bdb" : "#98a2b3";
        return {
          ...edge,
          sourceHandle: sourceHandleOf(edge),
          targetHandle: targetHandleOf(edge),
          className: problem ? `ed-edge-${problem}` : undefined,
          markerEnd: { type: MarkerType.ArrowClosed, color, width: 18, height: 18 },
          style: { stroke: color, strokeWidth: problem || edge.selected ? 2.5 : 1.6 },
        };
      });
  }, [doc.edges, doc.nodes, issues]);

  const describe = useCallback(
    (issue: LocatedIssue) => {
      const current = docRef.current;
      if (issue.nodeKey) {
        const node = current.nodes.find((candidate) => candidate.id === issue.nodeKey);
        return node ? node.data.def.id : (issue.node_id ?? "node");
      }
      if (issue.edgeKey) {
        const edge = current.edges.find((candidate) => candidate.id === issue.edgeKey);
        return edge ? `${nodeDefId(current, edge.source)} → ${nodeDefId(current, edge.target)}` : "edge";
      }
      return "workflow";
    },
    [docRef],
  );

  const pickIssue = (issue: LocatedIssue) => {
    const node = issue.nodeKey ? docRef.current.nodes.find((candidate) => candidate.id === issue.nodeKey) : undefined;
    if (node) {
      select(node.id);
      const width = node.measured?.width ?? NODE_WIDTH;
      const height = node.measured?.height ?? 60;
      void flow.setCenter(node.position.x + width / 2, node.position.y + height / 2, { zoom: Math.max(flow.getZoom(), 0.8), duration: 250 });
    } else if (issue.edgeKey && docRef.current.edges.some((edge) => edge.id === issue.edgeKey)) {
      select(null, issue.edgeKey);
    } else {
      select(null);
    }
  };

  // ---------------------------------------------------------------- inspector
  const selectedNodes = doc.nodes.filter((node) => node.selected);
  const selectedEdges = doc.edges.filter((edge) => edge.selected);
  let inspector;
  if (selectedNodes.length === 1) {
    const node = selectedNodes[0];
    inspector = (
      <NodeInspector
        key={node.id}
        node={node}
        spec={typeMap.get(node.data.def.type)}
        issues={issues.filter((issue) => issue.nodeKey === node.id)}
        otherIds={doc.nodes.filter((other) => other.id !== node.id).map((other) => other.data.def.id)}
        onChange={(change, key) => updateNode(node.id, change, key)}
        onRename={(next) => update((d) => renameNode(d, node.id, next))}
        onDelete={deleteSelection}
        catalog={catalog}
        lastRun={lastRun}
      />
    );
  } else if (selectedNodes.length > 1) {
    inspector = (
      <div className="ed-inspector-body">
        <div className="ed-inspector-head">
          <div className="ed-inspector-title">{selectedNodes.length} nodes selected</div>
          <button type="button" className="danger ed-push" onClick={deleteSelection}>
            Delete
          </button>
        </div>
        <p className="ed-muted ed-small">Drag them or press the arrow keys to move them together; press Delete to remove them (? lists the other shortcuts).</p>
      </div>
    );
  } else if (selectedEdges.length === 1) {
    const edge = selectedEdges[0];
    inspector = (
      <EdgeInspector
        key={edge.id}
        edge={edge}
        source={nodeDefId(doc, edge.source)}
        target={nodeDefId(doc, edge.target)}
        issues={issues.filter((issue) => issue.edgeKey === edge.id)}
        onDelete={deleteSelection}
      />
    );
  } else {
    inspector = (
      <WorkflowPanel
        meta={doc.meta}
        issues={issues.filter((issue) => !issue.nodeKey && !issue.edgeKey)}
        onChange={updateMeta}
      />
    );
  }

  // What `{{ }}` completes to in the inspector: the selected node's upstream, or every node
  // for the workflow's outputs.
  const referenceKey = selectedNodes.length === 1 ? selectedNodes[0].id : null;
  const references = useMemo(
    () => (selectedNodes.length > 1 || selectedEdges.length ? [] : referencesFor(doc, referenceKey, typeMap)),
    // The references change with the graph, the inputs and the node ids, not with positions.
    [referenceKey, typeMap, validation.currentKey, selectedNodes.length, selectedEdges.length],
  );

  // ---------------------------------------------------------------- page
  const validationCurrent = validation.state.checkedKey === validation.currentKey;
  const knownInvalid = validationCurrent && validation.state.status === "done" && !validation.state.valid;
  const title = workflowId ? "Save a new version (Ctrl+S)" : "Save the workflow (Ctrl+S)";

  return (
    <div className="editor">
      <div className="ed-toolbar">
        <a className="ed-back" href="#/workflows" title="All workflows">
          ← Workflows
        </a>
        <input
          className="ed-name"
          data-testid="workflow-name"
          aria-label="Workflow name"
          placeholder="Workflow name"
          value={doc.meta.name}
          onChange={(event) => updateMeta((meta) => ({ ...meta, name: event.target.value }), "name")}
        />
        <span className={`ed-version${version ? "" : " new"}`} data-testid="workflow-version" title={version ? "Saved version" : "Not saved yet"}>
          {version ? `v${version}` : "new"}
        </span>
        <span className="ed-state" data-testid="dirty-state">
          {saving ? "Saving…" : dirty ? "Unsaved changes" : version ? "Saved" : ""}
        </span>
        <div className="ed-spacer" />
        <div className="ed-group ed-drawer-toggles">
          <button type="button" data-testid="toggle-palette" aria-pressed={drawer === "palette"} onClick={() => setDrawer(drawer === "palette" ? null : "palette")}>
            + Nodes
          </button>
          <button type="button" data-testid="toggle-inspector" aria-pressed={drawer === "inspector"} onClick={() => setDrawer(drawer === "inspector" ? null : "inspector")}>
            Inspector
          </button>
        </div>
        <div className="ed-group ed-history">
          <button type="button" onClick={history.undo} disabled={!history.canUndo} title="Undo (Ctrl+Z)" data-testid="undo">
            Undo
          </button>
          <button type="button" onClick={history.redo} disabled={!history.canRedo} title="Redo (Ctrl+Shift+Z)" data-testid="redo">
            Redo
          </button>
        </div>
        <button type="button" onClick={() => autoLayout()} disabled={!doc.nodes.length} title="Arrange left to right (L)" data-testid="auto-layout">
          Auto-layout
        </button>
        <div className="ed-group ed-files">
          <button type="button" onClick={() => setDialog("import")} title="Import JSON or YAML" data-testid="import-definition">
            Import
          </button>
          <button type="button" onClick={() => exportAs("json")} title="Download as JSON" data-testid="export-json">
            JSON ↓
          </button>
          <button type="button" onClick={() => exportAs("yaml")} title="Download as YAML" data-testid="export-yaml">
            YAML ↓
          </button>
        </div>
        <HistoryButton workflowId={workflowId} />
        <button type="button" className="ed-help-button" onClick={() => setDialog("help")} title="Keyboard shortcuts (?)" aria-label="Keyboard shortcuts">
          ?
        </button>
        <button
          type="button"
          className="primary"
          data-testid="save-workflow"
          onClick={() => void save()}
          disabled={saving || loading || Boolean(loadError) || (Boolean(workflowId) && !dirty)}
          title={knownInvalid ? "Fix the problems listed below to save" : title}
        >
          {saving ? "Saving…" : "Save"}
        </button>
        <button type="button" className="ed-run" data-testid="run-workflow" onClick={() => void run()} disabled={saving || loading || Boolean(loadError)} title="Save if needed, then run">
          ▶ Run
        </button>
      </div>
      <div className={`ed-main${drawer ? ` drawer-${drawer}` : ""}`}>
        {drawer && (
          <button type="button" className="ed-drawer-close" data-testid="close-drawer" aria-label="Close" onClick={() => setDrawer(null)}>
            ×
          </button>
        )}
        <Palette
          types={types}
          error={typesError}
          onAdd={(type) => {
            addNode(type);
            setDrawer(null);
          }}
          onAddPreset={(type, params) => {
            addNode(type, undefined, params);
            setDrawer(null);
          }}
        />
        <div className="ed-center">
          <div className="ed-canvas" data-testid="canvas" ref={canvasRef} onDragOver={onDragOver} onDrop={onDrop}>
            {loading && <div className="ed-overlay">Loading workflow…</div>}
            {loadError && <div className="ed-overlay error">{loadError}</div>}
            {!loading && !loadError && (
              <CanvasInfo.Provider value={canvasInfo}>
                <ReactFlow<FlowNode, FlowEdge>
                  nodes={doc.nodes}
                  edges={renderedEdges}
                  nodeTypes={NODE_TYPES}
                  onNodesChange={onNodesChange}
                  onEdgesChange={onEdgesChange}
                  onConnect={onConnect}
                  isValidConnection={isValidConnection}
                  onNodeDragStart={history.checkpoint}
                  onNodeDragStop={settleDrag}
                  onSelectionDragStart={history.checkpoint}
                  onSelectionDragStop={settleDrag}
                  deleteKeyCode={null}
                  defaultViewport={inherited?.viewport ?? { x: 40, y: 40, zoom: 1 }}
                  minZoom={MIN_ZOOM}
                  maxZoom={2}
                  snapToGrid
                  snapGrid={[10, 10]}
                  colorMode={theme}
                >
                  <Background gap={20} size={1} color={theme === "dark" ? "#3a4452" : "#d0d5dd"} />
                  <Controls showInteractive={false} position="bottom-left" />
                  <MiniMap pannable zoomable position="bottom-right" ariaLabel="Minimap" nodeColor={minimapColor} nodeStrokeWidth={3} />
                </ReactFlow>
              </CanvasInfo.Provider>
            )}
            {!loading && !loadError && doc.nodes.length === 0 && (
              <div className="ed-empty">
                <strong>Drag a node type here from the palette</strong>
                <span>or click one to add it, or import a definition.</span>
              </div>
            )}
            {notice && (
              <div className={`ed-notice ${notice.kind}`} data-testid="editor-notice" role="status">
                {notice.text}
                <button type="button" className="ed-icon-button" aria-label="Dismiss" onClick={() => setNotice(null)}>
                  ×
                </button>
              </div>
            )}
          </div>
          <IssuesPanel state={validation.state} blank={blank} stale={!validationCurrent} describe={describe} onPick={pickIssue} />
        </div>
        <aside className="ed-inspector" data-testid="inspector" aria-label="Inspector">
          <References.Provider value={references}>{inspector}</References.Provider>
        </aside>
      </div>
      {dialog === "import" && <ImportDialog onImport={importDefinition} onClose={() => setDialog(null)} />}
      {dialog === "help" && <HelpDialog onClose={() => setDialog(null)} />}
    </div>
  );
}
