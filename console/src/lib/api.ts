// The HTTP API of the gateway (see ARCHITECTURE.md): one fetch wrapper that adds the API key
// and turns the `{"error": {code, message, details}}` body into an ApiError.

const KEY_STORAGE = "heddle.apiKey";

export function getApiKey(): string | null {
  return localStorage.getItem(KEY_STORAGE);
}

export function setApiKey(key: string | null): void {
  if (key) localStorage.setItem(KEY_STORAGE, key);
  else localStorage.removeItem(KEY_STORAGE);
}

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly details: unknown,
  ) {
    super(message);
  }
}

export async function api<T = unknown>(
  path: string,
  init: { method?: string; body?: unknown; rawBody?: string; contentType?: string } = {},
): Promise<T> {
  const headers: Record<string, string> = { Accept: "application/json" };
  const key = getApiKey();
  if (key) headers.Authorization = `Bearer ${key}`;
  let body: string | undefined;
  if (init.rawBody !== undefined) {
    body = init.rawBody;
    headers["Content-Type"] = init.contentType ?? "application/json";
  } else if (init.body !== undefined) {
    body = JSON.stringify(init.body);
    headers["Content-Type"] = "application/json";
  }
  const response = await fetch(path, { method: init.method ?? "GET", headers, body });
  if (response.status === 204) return undefined as T;
  const text = await response.text();
  let data: unknown = undefined;
  try {
    data = text ? JSON.parse(text) : undefined;
  } catch {
    data = text;
  }
  if (!response.ok) {
    const error = (data as { error?: { code?: string; message?: string; details?: unknown } })
      ?.error;
    throw new ApiError(
      response.status,
      error?.code ?? String(response.status),
      error?.message ?? response.statusText,
      error?.details,
    );
  }
  return data as T;
}

export interface Page<T> {
  items: T[];
  page: number;
  page_size: number;
  total: number;
}

/** What the gateway tells the console before sign-in (`GET /console/config`). */
export interface ConsoleConfig {
  dev_api_key: string | null;
  jaeger_url: string | null;
}

export async function consoleConfig(): Promise<ConsoleConfig> {
  try {
    return await api<ConsoleConfig>("/console/config");
  } catch {
    return { dev_api_key: null, jaeger_url: null };
  }
}
