// Following an execution's Server-Sent Events with fetch() (so the API key travels in the
// Authorization header, not in a URL that access logs keep), resuming with `?after=<seq>`
// whenever the stream ends early (the gateway's stream deadline) or the network fails.
import { getApiKey } from "../lib/api";
import type { StreamEvent } from "./executionState";

export type StreamState = "live" | "reconnecting" | "closed";

export interface FollowOptions {
  executionId: string;
  /** The last sequence number applied: where a new connection resumes. */
  lastSeq: () => number;
  /** Whether the execution's final event has been applied (then an ended stream is done). */
  finished: () => boolean;
  onEvents: (events: StreamEvent[]) => void;
  onState: (state: StreamState, detail?: string) => void;
  onReconnect: () => void;
}

const FIRST_DELAY_MS = 250;
const MAX_DELAY_MS = 8000;

class StreamRefused extends Error {}

/** Start following; the returned function stops (and aborts the request in flight). */
export function followEvents(options: FollowOptions): () => void {
  const controller = new AbortController();
  const { signal } = controller;

  // The backoff wait; cut short when the browser comes back online.
  const sleep = (ms: number) =>
    new Promise<void>((resolve) => {
      const done = () => {
        clearTimeout(timer);
        window.removeEventListener("online", done);
        signal.removeEventListener("abort", done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      window.addEventListener("online", done);
      signal.addEventListener("abort", done);
    });

  (async () => {
    let failures = 0;
    while (!signal.aborted) {
      let received = 0;
      let problem: string | undefined;
      try {
        received = await connect(options, signal);
        if (received < 0) {
          options.onState("closed"); // 204: nothing after our point, and the execution ended
          return;
        }
      } catch (error) {
        if (signal.aborted) return;
        if (error instanceof StreamRefused) {
          options.onState("closed", error.message);
          return;
        }
        problem = error instanceof Error ? error.message : String(error);
      }
      if (signal.aborted) return;
      if (options.finished()) {
        options.onState("closed");
        return;
      }
      // Ended early: resume where we are. A stream the server closed cleanly (its deadline)
      // or that delivered something resumes after a short pause; failures in a row back off.
      failures = problem === undefined || received > 0 ? 0 : failures + 1;
      options.onState("reconnecting", problem);
      options.onReconnect();
      await sleep(Math.min(FIRST_DELAY_MS * 2 ** failures, MAX_DELAY_MS));
    }
  })();

  return () => controller.abort();
}

/** One connection: the number of events received, or -1 when the server has nothing more. */
async function connect(options: FollowOptions, signal: AbortSignal): Promise<number> {
  const headers: Record<string, string> = { Accept: "text/event-stream" };
  const key = getApiKey();
  if (key) headers.Authorization = `Bearer ${key}`;
  const url = `/api/v1/executions/${encodeURIComponent(options.executionId)}/events?after=${options.lastSeq()}`;
  const response = await fetch(url, { headers, signal, cache: "no-store" });
  if (response.status === 204) return -1;
  if (!response.ok || !response.body) {
    let message = `${response.status} ${response.statusText}`;
    try {
      const body = await response.json();
      message = body?.error?.message ?? message;
    } catch {
      // not JSON
    }
    if ([400, 401, 403, 404, 422].includes(response.status)) throw new StreamRefused(message);
    throw new Error(message);
  }
  options.onState("live");
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let received = 0;
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value.replace(/\r\n?/g, "\n");
      const frames = buffer.split("\n\n");
      buffer = frames.pop() ?? "";
      const batch: StreamEvent[] = [];
      for (const frame of frames) {
        const parsed = parseFrame(frame);
        if (parsed?.kind === "error") throw new Error(parsed.message);
        if (parsed?.kind === "event") batch.push(parsed.event);
      }
      if (batch.length) {
        received += batch.length;
        options.onEvents(batch);
      }
    }
  } finally {
    reader.releaseLock();
  }
  return received;
}

type Frame = { kind: "event"; event: StreamEvent } | { kind: "error"; message: string };

function parseFrame(frame: string): Frame | null {
  let eventType = "message";
  const data: string[] = [];
  for (const line of frame.split("\n")) {
    if (!line || line.startsWith(":")) continue;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
    if (field === "event") eventType = value;
    else if (field === "data") data.push(value);
  }
  if (data.length === 0) return null;
  const text = data.join("\n");
  if (eventType === "error") {
    try {
      const body = JSON.parse(text);
      return { kind: "error", message: body?.error?.message ?? "stream error" };
    } catch {
      return { kind: "error", message: text };
    }
  }
  const event = JSON.parse(text) as StreamEvent;
  return typeof event.seq === "number" ? { kind: "event", event } : null;
}
