// A workflow input of `type: file` in the run form: choosing a file uploads it
// (POST /api/v1/files, multipart, with its progress shown) and the input takes its id.
import { useState } from "react";
import { getApiKey } from "../lib/api";
import { formatBytes } from "./ArtifactView";
import type { FieldInput } from "./schemaForm";
import "./artifacts.css";

interface Uploaded {
  id: string;
  name: string;
  size: number;
  sha256: string;
  content_type: string;
}

function upload(file: File, onProgress: (fraction: number) => void): Promise<Uploaded> {
  return new Promise((resolve, reject) => {
    // XMLHttpRequest, not fetch: only it reports upload progress.
    const request = new XMLHttpRequest();
    request.open("POST", "/api/v1/files");
    const key = getApiKey();
    if (key) request.setRequestHeader("Authorization", `Bearer ${key}`);
    request.setRequestHeader("Accept", "application/json");
    request.upload.onprogress = (event) => {
      if (event.lengthComputable && event.total > 0) onProgress(event.loaded / event.total);
    };
    request.onload = () => {
      let body: unknown = null;
      try {
        body = JSON.parse(request.responseText);
      } catch {
        // not JSON: the status says it
      }
      if (request.status === 201) resolve(body as Uploaded);
      else {
        const message = (body as { error?: { message?: string } } | null)?.error?.message;
        reject(new Error(message ?? `upload failed: ${request.status} ${request.statusText}`));
      }
    };
    request.onerror = () => reject(new Error("upload failed: the gateway could not be reached"));
    const form = new FormData();
    form.append("file", file, file.name);
    request.send(form);
  });
}

/** Takes FieldInput's props, so the run form mounts either one. */
export function FileInput({ field, error, testId, onChange }: Parameters<typeof FieldInput>[0]) {
  const id = `${testId}-control`;
  const [progress, setProgress] = useState<number | null>(null);
  const [uploaded, setUploaded] = useState<Uploaded | null>(null);
  const [failure, setFailure] = useState<string | null>(null);

  const choose = async (file: File | undefined) => {
    onChange(""); // nothing to submit until this upload is stored
    setUploaded(null);
    setFailure(null);
    if (!file) {
      setProgress(null);
      return;
    }
    setProgress(0);
    try {
      const stored = await upload(file, setProgress);
      setProgress(1);
      setUploaded(stored);
      onChange(stored.id);
    } catch (problem) {
      setProgress(null);
      setFailure((problem as Error).message);
    }
  };

  const uploading = progress !== null && uploaded === null;
  return (
    <div className={`rf-field${error || failure ? " invalid" : ""}`}>
      <label htmlFor={id} className="rf-label">
        <span className="rf-name">{field.title ?? field.name}</span>
        {field.required && (
          <span className="rf-required" title="required">
            *
          </span>
        )}
        <span className="rf-kind">file</span>
      </label>
      <input id={id} type="file" data-testid={testId} onChange={(event) => void choose(event.target.files?.[0])} />
      {uploading && (
        <div className="fi-status" data-testid={`${testId}-progress`}>
          <progress max={1} value={progress ?? 0} />
          <span>{Math.round((progress ?? 0) * 100)}%</span>
        </div>
      )}
      {uploaded && (
        <div className="fi-status" data-testid={`${testId}-uploaded`} data-file-id={uploaded.id}>
          <span>{uploaded.name || "uploaded"}</span>
          <span className="ev-muted">{formatBytes(uploaded.size)}</span>
          <span className="ev-muted ev-mono" title={`sha256 ${uploaded.sha256}`}>
            sha256 {uploaded.sha256.slice(0, 12)}
          </span>
        </div>
      )}
      {field.description && <div className="rf-help">{field.description}</div>}
      {(failure || error) && (
        <div className="rf-error" data-testid={`${testId}-error`}>
          {failure ?? error}
        </div>
      )}
    </div>
  );
}
