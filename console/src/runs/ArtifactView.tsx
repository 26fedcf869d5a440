// Values carried by reference (the claim check: `{"$ref": "artifact://…", size, sha256,
// content_type}`): size, type and digest, a preview (the first few KB of text, read with a
// Range request; an image inline) and a download link. The API authenticates with a header,
// which a plain link cannot send, so the link is a short-lived signed URL from the gateway.
import { useEffect, useMemo, useState, type MouseEvent } from "react";
import { api, getApiKey } from "../lib/api";
import "./artifacts.css";

export interface ArtifactRef {
  $ref: string;
  size: number;
  sha256: string;
  content_type?: string;
  name?: string;
  file_id?: string;
}

const PREVIEW_BYTES = 4096;
const IMAGE_MAX_BYTES = 8 * 1024 * 1024;
const MAX_REFS = 50;
const TEXTUAL = /^(text\/|application\/(json|xml|yaml|x-yaml|csv|x-ndjson|javascript))|\+json|\+xml/;

export function isArtifactRef(value: unknown): value is ArtifactRef {
  if (!value || typeof value !== "object" || Array.isArray(value)) return false;
  const ref = (value as { $ref?: unknown }).$ref;
  return typeof ref === "string" && ref.startsWith("artifact://") && "sha256" in value;
}

/** Every reference in a value with where it sits (`value`, `items[2].doc`), depth first. */
export function findRefs(value: unknown, path = "", found: { path: string; ref: ArtifactRef }[] = [], depth = 0) {
  if (found.length >= MAX_REFS || depth > 8) return found;
  if (isArtifactRef(value)) {
    found.push({ path: path || "value", ref: value });
  } else if (Array.isArray(value)) {
    value.forEach((item, index) => findRefs(item, `${path}[${index}]`, found, depth + 1));
  } else if (value && typeof value === "object") {
    for (const [key, item] of Object.entries(value)) findRefs(item, path ? `${path}.${key}` : key, found, depth + 1);
  }
  return found;
}

export function formatBytes(bytes: number): string {
  if (!Number.isFinite(bytes) || bytes < 0) return "—";
  if (bytes < 1024) return `${bytes} B`;
  const units = ["KiB", "MiB", "GiB", "TiB"];
  let size = bytes / 1024;
  let unit = 0;
  while (size >= 1024 && unit < units.length - 1) {
    size /= 1024;
    unit += 1;
  }
  return `${size.toFixed(size < 10 ? 1 : 0)} ${units[unit]}`;
}

function mediaType(ref: ArtifactRef): string {
  return (ref.content_type || "application/octet-stream").split(";")[0].trim().toLowerCase();
}

function contentPath(ref: ArtifactRef): string {
  const query = new URLSearchParams({ ref: ref.$ref, content_type: ref.content_type || "application/octet-stream" });
  return `/api/v1/artifacts/content?${query}`;
}

async function fetchContent(ref: ArtifactRef, range?: string): Promise<Response> {
  const headers: Record<string, string> = {};
  const key = getApiKey();
  if (key) headers.Authorization = `Bearer ${key}`;
  if (range) headers.Range = range;
  const response = await fetch(contentPath(ref), { headers });
  if (!response.ok) {
    let message = response.statusText;
    try {
      message = ((await response.json()) as { error?: { message?: string } }).error?.message ?? message;
    } catch {
      // not JSON: the status text says it
    }
    throw new Error(message);
  }
  return response;
}

function fileName(ref: ArtifactRef, path: string): string {
  if (ref.name) return ref.name;
  const type = mediaType(ref);
  const extension = type === "application/json" ? ".json" : type.startsWith("text/") ? ".txt" : "";
  return `${path.replace(/[^A-Za-z0-9._-]+/g, "_") || "artifact"}${extension}`;
}

function ArtifactCard({ path, artifact: given }: { path: string; artifact: ArtifactRef }) {
  // The same reference arrives as a new object with every re-read of the execution: the
  // effects below depend on what it says, not on its identity (no refetch, no revoked image).
  const { $ref, size, sha256, content_type, name: givenName } = given;
  const artifact = useMemo(
    () => ({ $ref, size, sha256, content_type, name: givenName }),
    [$ref, size, sha256, content_type, givenName],
  );
  const type = mediaType(artifact);
  const textual = TEXTUAL.test(type);
  const image = type.startsWith("image/") && artifact.size <= IMAGE_MAX_BYTES;
  const [preview, setPreview] = useState<string | null>(null);
  const [imageUrl, setImageUrl] = useState<string | null>(null);
  const [download, setDownload] = useState<{ url: string; expires: number } | null>(null);
  const [problem, setProblem] = useState<string | null>(null);
  const name = fileName(artifact, path);

  useEffect(() => {
    let live = true;
    let objectUrl: string | null = null;
    (async () => {
      try {
        if (image) {
          const blob = await (await fetchContent(artifact)).blob();
          objectUrl = URL.createObjectURL(blob);
          if (live) setImageUrl(objectUrl);
        } else if (textual && artifact.size > 0) {
          const response = await fetchContent(artifact, `bytes=0-${PREVIEW_BYTES - 1}`);
          const bytes = new Uint8Array(await response.arrayBuffer());
          let text = new TextDecoder("utf-8", { fatal: false }).decode(bytes);
          if (artifact.size <= PREVIEW_BYTES && type === "application/json") {
            try {
              text = JSON.stringify(JSON.parse(text), null, 2);
            } catch {
              // shown as it is
            }
          }
          if (live) setPreview(artifact.size > PREVIEW_BYTES ? `${text}…` : text);
        }
      } catch (error) {
        if (live) setProblem((error as Error).message);
      }
    })();
    return () => {
      live = false;
      if (objectUrl) URL.revokeObjectURL(objectUrl);
    };
  }, [artifact, image, textual, type]);

  useEffect(() => {
    let live = true;
    api<{ url: string; expires_at: string }>("/api/v1/artifacts/download-url", {
      method: "POST",
      body: { ref: artifact.$ref, content_type: artifact.content_type, name },
    })
      .then((signed) => live && setDownload({ url: signed.url, expires: Date.parse(signed.expires_at) }))
      .catch((error: Error) => live && setProblem(error.message));
    return () => {
      live = false;
    };
  }, [artifact, name]);

  const refreshIfStale = async (event: MouseEvent<HTMLAnchorElement>) => {
    if (!download || Date.now() < download.expires - 10_000) return;
    event.preventDefault();
    const signed = await api<{ url: string; expires_at: string }>("/api/v1/artifacts/download-url", {
      method: "POST",
      body: { ref: artifact.$ref, content_type: artifact.content_type, name },
    });
    setDownload({ url: signed.url, expires: Date.parse(signed.expires_at) });
    window.location.assign(signed.url);
  };

  return (
    <div className="av-card" data-testid="artifact" data-ref={artifact.$ref} data-path={path}>
      <div className="av-head">
        <span className="av-path ev-mono">{path}</span>
        <span className="av-size" data-testid="artifact-size" data-bytes={artifact.size}>
          {formatBytes(artifact.size)}
        </span>
        <span className="av-type" data-testid="artifact-type">
          {artifact.content_type || "application/octet-stream"}
        </span>
        <span className="av-sha ev-mono" data-testid="artifact-sha" title={`sha256 ${artifact.sha256}`}>
          sha256 {artifact.sha256.slice(0, 12)}
        </span>
        {download ? (
          <a className="av-download" data-testid="artifact-download" href={download.url} download={name} onClick={refreshIfStale}>
            Download
          </a>
        ) : (
          <span className="ev-muted">…</span>
        )}
      </div>
      {preview !== null && (
        <pre className="ev-json av-preview" data-testid="artifact-preview">
          {preview}
        </pre>
      )}
      {imageUrl && <img className="av-image" data-testid="artifact-image" src={imageUrl} alt={name} />}
      {problem && (
        <div className="av-problem" data-testid="artifact-problem">
          {problem}
        </div>
      )}
    </div>
  );
}

/** The references a value holds, one card each; nothing when it holds none. */
export function ArtifactRefs({ value, testId }: { value: unknown; testId: string }) {
  const found = findRefs(value);
  if (found.length === 0) return null;
  return (
    <div className="av-list" data-testid={testId}>
      {found.map(({ path, ref }) => (
        <ArtifactCard key={`${path}:${ref.$ref}`} path={path} artifact={ref} />
      ))}
    </div>
  );
}
