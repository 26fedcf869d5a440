// `#/agents`: registered agents; `#/agents/new` and `#/agents/<id>`: the editor (model and tool
// pickers, versions) beside the chat playground (streamed tokens, steps, the session).
import { useCallback, useEffect, useRef, useState } from "react";
import { api, getApiKey, type Page } from "../lib/api";
import { navigate } from "../lib/router";
import { ChatApproval } from "../runs/ChatApproval";
import { EmptyState, ErrorNote, RelativeTime, errorMessage } from "../runs/common";
import "../runs/lists.css";
import "./agents.css";

export interface Agent {
  id: string;
  version: number;
  name: string;
  description: string;
  instructions: string;
  type: "react" | "plan_execute" | "chat";
  status: "active" | "paused" | "retired";
  model: string;
  fallback_models: string[];
  temperature: number | null;
  max_tokens: number | null;
  tools: string[];
  /** Tools of `tools` whose calls wait for a person's approval. */
  approval_tools?: string[];
  memory: { last_n: number | null; max_tokens: number | null; summary: boolean };
  max_steps: number;
  output_schema: Record<string, unknown> | null;
  created_by: string;
  created_at: string;
}

type Draft = Omit<Agent, "id" | "version" | "created_by" | "created_at">;

const EMPTY: Draft = {
  name: "",
  description: "",
  instructions: "",
  type: "react",
  status: "active",
  model: "",
  fallback_models: [],
  temperature: null,
  max_tokens: null,
  tools: [],
  memory: { last_n: 20, max_tokens: null, summary: false },
  max_steps: 10,
  output_schema: null,
};

export function AgentList() {
  const [data, setData] = useState<Page<Agent> | null>(null);
  const [error, setError] = useState<string | null>(null);
  const load = useCallback(async () => {
    try {
      setData(await api<Page<Agent>>("/api/v1/agents?page_size=100"));
      setError(null);
    } catch (caught) {
      setError(errorMessage(caught));
    }
  }, []);
  useEffect(() => {
    load();
  }, [load]);
  return (
    <div className="page">
      <header className="page-header">
        <div>
          <h1>Agents</h1>
          <p className="muted">Registered agents, current version of each: use one by id in an agent node, or chat with it.</p>
        </div>
        <button className="primary" data-testid="new-agent" onClick={() => navigate("/agents/new")}>
          + New agent
        </button>
      </header>
      <ErrorNote error={error} onRetry={load} />
      {data === null ? (
        !error && <p className="muted loading">Loading agents…</p>
      ) : data.total === 0 ? (
        <EmptyState title="No agents yet">
          <p>An agent is a model with instructions, tools and a memory policy, defined once.</p>
        </EmptyState>
      ) : (
        <div className="table-wrap">
          <table className="data" data-testid="agent-list">
            <thead>
              <tr>
                <th>Name</th>
                <th>Type</th>
                <th>Model</th>
                <th>Status</th>
                <th className="num">Version</th>
                <th>Saved</th>
              </tr>
            </thead>
            <tbody>
              {data.items.map((agent) => (
                <tr key={agent.id} className="clickable" data-testid={`agent-row-${agent.id}`} onClick={() => navigate(`/agents/${agent.id}`)}>
                  <td>
                    <a className="row-title" href={`#/agents/${agent.id}`} onClick={(event) => event.stopPropagation()}>
                      {agent.name}
                    </a>
                    {agent.description && <div className="muted ellipsis">{agent.description}</div>}
                  </td>
                  <td>{agent.type}</td>
                  <td>{agent.model}</td>
                  <td>{agent.status}</td>
                  <td className="num">v{agent.version}</td>
                  <td>
                    <RelativeTime value={agent.created_at} />
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
    </div>
  );
}

export function AgentPage({ agentId }: { agentId: string | null }) {
  const [draft, setDraft] = useState<Draft>(EMPTY);
  const [saved, setSaved] = useState<Agent | null>(null);
  const [versions, setVersions] = useState<Agent[]>([]);
  const [models, setModels] = useState<string[]>([]);
  const [tools, setTools] = useState<string[]>([]);
  const [schemaText, setSchemaText] = useState("");
  const [error, setError] = useState<string | null>(null);

  useEffect(() => {
    (async () => {
      try {
        const [m, t] = await Promise.all([
          api<{ models: { name: string }[] }>("/api/v1/ai/models"),
          api<{ tools: { name: string }[] }>("/api/v1/tools"),
        ]);
        setModels(m.models.map((x) => x.name));
        setTools(t.tools.map((x) => x.name));
      } catch (caught) {
        setError(errorMessage(caught));
      }
    })();
  }, []);

  const load = useCallback(async () => {
    if (!agentId) return;
    try {
      const all = await api<Agent[]>(`/api/v1/agents/${agentId}/versions`);
      setVersions(all);
      show(all[0]);
    } catch (caught) {
      setError(errorMessage(caught));
    }
  }, [agentId]);
  useEffect(() => {
    load();
  }, [load]);

  const show = (agent: Agent) => {
    const { id: _id, version: _v, created_by: _by, created_at: _at, ...rest } = agent;
    setSaved(agent);
    setDraft(rest);
    setSchemaText(agent.output_schema ? JSON.stringify(agent.output_schema, null, 2) : "");
  };

  const save = async () => {
    let output_schema: Record<string, unknown> | null = null;
    if (schemaText.trim()) {
      try {
        output_schema = JSON.parse(schemaText);
      } catch {
        setError("The output schema is not JSON");
        return;
      }
    }
    const body = { ...draft, model: draft.model || models[0] || "", output_schema };
    try {
      const agent = agentId
        ? await api<Agent>(`/api/v1/agents/${agentId}`, { method: "PUT", body })
        : await api<Agent>("/api/v1/agents", { method: "POST", body });
      setError(null);
      if (!agentId) navigate(`/agents/${agent.id}`);
      else await load();
    } catch (caught) {
      setError(errorMessage(caught));
    }
  };

  const set = <K extends keyof Draft>(key: K, value: Draft[K]) => setDraft({ ...draft, [key]: value });
  const toggleTool = (name: string) =>
    setDraft(
      draft.tools.includes(name)
        ? { ...draft, tools: draft.tools.filter((t) => t !== name), approval_tools: (draft.approval_tools ?? []).filter((t) => t !== name) }
        : { ...draft, tools: [...draft.tools, name] },
    );
  const toggleApproval = (name: string) => {
    const asked = draft.approval_tools ?? [];
    set("approval_tools", asked.includes(name) ? asked.filter((t) => t !== name) : [...asked, name]);
  };

  return (
    <div className="page agent-page">
      <header className="page-header">
        <div>
          <h1>{agentId ? draft.name || "Agent" : "New agent"}</h1>
          {saved && (
            <p className="muted" data-testid="agent-version">
              v{saved.version} · {saved.id}
            </p>
          )}
        </div>
        <a className="button" href="#/agents">
          All agents
        </a>
      </header>
      <ErrorNote error={error} />
      <div className="agent-columns">
        <form className="agent-form" onSubmit={(event) => (event.preventDefault(), save())}>
          <label>
            Name
            <input data-testid="agent-name" value={draft.name} onChange={(e) => set("name", e.target.value)} />
          </label>
          <label>
            Description
            <input value={draft.description} onChange={(e) => set("description", e.target.value)} />
          </label>
          <label>
            Instructions
            <textarea data-testid="agent-instructions" rows={4} value={draft.instructions} onChange={(e) => set("instructions", e.target.value)} />
          </label>
          <div className="agent-row">
            <label>
              Type
              <select data-testid="agent-type" value={draft.type} onChange={(e) => set("type", e.target.value as Draft["type"])}>
                <option value="react">react</option>
                <option value="plan_execute">plan_execute</option>
                <option value="chat">chat</option>
              </select>
            </label>
            <label>
              Status
              <select value={draft.status} onChange={(e) => set("status", e.target.value as Draft["status"])}>
                <option value="active">active</option>
                <option value="paused">paused</option>
                <option value="retired">retired</option>
              </select>
            </label>
            <label>
              Model
              <select data-testid="agent-model" value={draft.model || models[0] || ""} onChange={(e) => set("model", e.target.value)}>
                {models.map((name) => (
                  <option key={name} value={name}>
                    {name}
                  </option>
                ))}
              </select>
            </label>
            <label>
              Max steps
              <input type="number" min={1} value={draft.max_steps} onChange={(e) => set("max_steps", Number(e.target.value))} />
            </label>
            <label>
              Memory: last N
              <input
                type="number"
                min={0}
                value={draft.memory.last_n ?? ""}
                onChange={(e) => set("memory", { ...draft.memory, last_n: e.target.value === "" ? null : Number(e.target.value) })}
              />
            </label>
          </div>
          <fieldset className="agent-tools" data-testid="agent-tools">
            <legend>Tools</legend>
            {tools.map((name) => (
              <span key={name} className="inline">
                <label className="inline">
                  <input type="checkbox" data-testid={`tool-${name}`} checked={draft.tools.includes(name)} onChange={() => toggleTool(name)} />
                  {name}
                </label>
                {draft.tools.includes(name) && (
                  <label className="inline muted" title="Every call waits for a person to approve, edit or reject it">
                    <input
                      type="checkbox"
                      data-testid={`approval-${name}`}
                      checked={(draft.approval_tools ?? []).includes(name)}
                      onChange={() => toggleApproval(name)}
                    />
                    ask first
                  </label>
                )}
              </span>
            ))}
          </fieldset>
          <label>
            Output JSON Schema (optional)
            <textarea rows={3} value={schemaText} onChange={(e) => setSchemaText(e.target.value)} />
          </label>
          <button className="primary" type="submit" data-testid="save-agent">
            {agentId ? "Save new version" : "Register"}
          </button>
          {versions.length > 0 && (
            <div className="agent-versions" data-testid="agent-versions">
              <h3>Versions</h3>
              <ul>
                {versions.map((v) => (
                  <li key={v.version}>
                    <button type="button" className="link" data-testid={`version-${v.version}`} onClick={() => show(v)}>
                      v{v.version}
                    </button>{" "}
                    <span className="muted">
                      {v.status} · {v.model} · <RelativeTime value={v.created_at} />
                    </span>
                  </li>
                ))}
              </ul>
            </div>
          )}
        </form>
        {agentId && <ChatPlayground agentId={agentId} />}
      </div>
    </div>
  );
}

interface Line {
  role: string;
  content: string;
  steps?: string[];
}

/** Chat over POST /agents/{id}/chat: an SSE stream read with fetch (EventSource cannot POST). */
function ChatPlayground({ agentId }: { agentId: string }) {
  const [sessionId, setSessionId] = useState<string | null>(null);
  const [lines, setLines] = useState<Line[]>([]);
  const [message, setMessage] = useState("");
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const live = useRef<Line | null>(null);
  const [run, setRun] = useState<string | null>(null);
  const [asking, setAsking] = useState<{ nodeId: string; waiting: unknown } | null>(null);

  const send = async () => {
    const text = message.trim();
    if (!text || busy) return;
    setBusy(true);
    setMessage("");
    setError(null);
    const answer: Line = { role: "assistant", content: "", steps: [] };
    live.current = answer;
    setLines((old) => [...old, { role: "user", content: text }, answer]);
    const headers: Record<string, string> = { "Content-Type": "application/json", Accept: "text/event-stream" };
    const key = getApiKey();
    if (key) headers.Authorization = `Bearer ${key}`;
    try {
      const response = await fetch(`/api/v1/agents/${agentId}/chat`, {
        method: "POST",
        headers,
        body: JSON.stringify(sessionId ? { message: text, session_id: sessionId } : { message: text }),
      });
      if (!response.ok || !response.body) {
        const body = await response.json().catch(() => null);
        throw new Error(body?.error?.message ?? response.statusText);
      }
      setSessionId(response.headers.get("x-session-id"));
      setRun(response.headers.get("x-execution-id"));
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true });
        let cut;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          const frame = buffer.slice(0, cut);
          buffer = buffer.slice(cut + 2);
          const data = frame.split("\n").find((l) => l.startsWith("data: "));
          if (data) onEvent(JSON.parse(data.slice(6)));
        }
      }
    } catch (caught) {
      setError(errorMessage(caught));
    } finally {
      setBusy(false);
      setAsking(null);
    }
  };

  const onEvent = (event: { type: string; data?: Record<string, unknown> }) => {
    const answer = live.current;
    if (!answer) return;
    const data = event.data ?? {};
    if (event.type === "node.text_chunk") answer.content += String(data.delta ?? "");
    else if (event.type === "node.waiting") setAsking({ nodeId: String((event as { node_id?: string }).node_id ?? ""), waiting: data });
    else if (event.type === "agent.step") {
      const name = data.name ?? data.tool ?? "";
      answer.steps = [...(answer.steps ?? []), `${data.type ?? data.step_type ?? "step"}${name ? `: ${name}` : ""}`];
    } else if (event.type === "node.completed") {
      const output = (data.output ?? {}) as { text?: string };
      if (output.text !== undefined) answer.content = output.text;
    } else if (event.type === "node.failed" || event.type === "execution.failed") {
      const failure = (data.error ?? {}) as { message?: string };
      setError(failure.message ?? "the chat failed");
    } else return;
    setLines((old) => [...old]);
  };

  return (
    <section className="chat" data-testid="chat">
      <h2>Chat</h2>
      <p className="muted" data-testid="chat-session">
        {sessionId ? `Session ${sessionId}` : "A new session starts with the first message."}
      </p>
      <ErrorNote error={error} />
      <div className="chat-lines" data-testid="chat-lines">
        {lines.map((line, index) => (
          <div key={index} className={`chat-line ${line.role}`} data-testid={`chat-${line.role}`}>
            {line.steps && line.steps.length > 0 && (
              <ul className="chat-steps" data-testid="chat-steps">
                {line.steps.map((step, i) => (
                  <li key={i}>{step}</li>
                ))}
              </ul>
            )}
            <div>{line.content || (busy && index === lines.length - 1 ? "…" : "")}</div>
          </div>
        ))}
      </div>
      {asking && run && (
        <ChatApproval executionId={run} nodeId={asking.nodeId} waiting={asking.waiting} onDone={() => setAsking(null)} />
      )}
      <form className="chat-input" onSubmit={(event) => (event.preventDefault(), send())}>
        <input data-testid="chat-message" value={message} placeholder="Say something" onChange={(e) => setMessage(e.target.value)} />
        <button className="primary" type="submit" data-testid="chat-send" disabled={busy}>
          Send
        </button>
      </form>
    </section>
  );
}
