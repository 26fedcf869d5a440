// What the editor's pickers offer: the models of the AI service (GET /api/v1/ai/models) and
// the tools of the tool service with their schemas (GET /api/v1/tools), read once a session.
import { useEffect, useState } from "react";
import { api } from "../lib/api";
import type { JsonSchema } from "../lib/types";

export interface ModelInfo {
  name: string;
  provider: string;
  healthy: boolean;
  breaker_state?: string;
  info?: { description?: string; upstream_model?: string; fallbacks?: string[]; [key: string]: unknown };
}

export interface ToolInfo {
  name: string;
  description: string;
  source: string;
  input_schema: JsonSchema;
  output_schema: JsonSchema;
}

export interface Catalog {
  models: ModelInfo[] | null;
  tools: ToolInfo[] | null;
  /** Why a list could not be read (the pickers then take free text). */
  error: string | null;
}

let loaded: Promise<Catalog> | null = null;

function readCatalog(): Promise<Catalog> {
  loaded ??= Promise.allSettled([
    api<{ models: ModelInfo[] }>("/api/v1/ai/models"),
    api<{ tools: ToolInfo[] }>("/api/v1/tools"),
  ]).then(([models, tools]) => {
    const failed = [models, tools].find((result) => result.status === "rejected");
    const catalog: Catalog = {
      models: models.status === "fulfilled" ? models.value.models : null,
      tools: tools.status === "fulfilled" ? tools.value.tools : null,
      error: failed ? `Could not load the ${models.status === "rejected" ? "models" : "tools"}: ${String(failed.reason?.message ?? failed.reason)}` : null,
    };
    // A failed read is tried again by the next editor, not remembered for the session.
    if (failed) loaded = null;
    return catalog;
  });
  return loaded;
}

/** The catalog, null until it is read. */
export function useCatalog(): Catalog | null {
  const [catalog, setCatalog] = useState<Catalog | null>(null);
  useEffect(() => {
    let live = true;
    void readCatalog().then((read) => {
      if (live) setCatalog(read);
    });
    return () => {
      live = false;
    };
  }, []);
  return catalog;
}
