import { useEffect, useState } from "react";
import { ApiError, api, consoleConfig, getApiKey, setApiKey } from "./lib/api";
import { navigate, useRoute } from "./lib/router";
import { EditorPage } from "./editor/EditorPage";
import { WorkflowList } from "./runs/WorkflowList";
import { ExecutionList } from "./runs/ExecutionList";
import { ExecutionView } from "./runs/ExecutionView";
import { ScheduleList } from "./runs/ScheduleList";
import { RunPage } from "./runs/RunPage";

type Auth = "checking" | "signed-in" | "signed-out";

export function App() {
  const route = useRoute();
  const [auth, setAuth] = useState<Auth>("checking");
  const [jaegerUrl, setJaegerUrl] = useState<string | null>(null);

  useEffect(() => {
    (async () => {
      const config = await consoleConfig();
      setJaegerUrl(config.jaeger_url);
      if (!getApiKey() && config.dev_api_key) setApiKey(config.dev_api_key);
      setAuth((await keyWorks()) ? "signed-in" : "signed-out");
    })();
  }, []);

  if (auth === "checking") return <div className="splash">Loading…</div>;
  if (auth === "signed-out") return <SignIn onSignedIn={() => setAuth("signed-in")} />;

  const [section = "workflows", id, sub] = route;
  let page;
  if (section === "workflows" && id && sub === "run") page = <RunPage workflowId={id} key={id} />;
  else if (section === "workflows" && id) page = <EditorPage workflowId={id === "new" ? null : id} key={id} />;
  else if (section === "executions" && id) page = <ExecutionView executionId={id} jaegerUrl={jaegerUrl} key={id} />;
  else if (section === "executions") page = <ExecutionList />;
  else if (section === "schedules") page = <ScheduleList />;
  else page = <WorkflowList />;

  return (
    <div className="shell">
      <header className="topbar">
        <a className="brand" href="#/workflows">Heddle</a>
        <nav>
          <a href="#/workflows" className={section === "workflows" ? "active" : ""} data-testid="nav-workflows">
            Workflows
          </a>
          <a href="#/executions" className={section === "executions" ? "active" : ""} data-testid="nav-executions">
            Executions
          </a>
          <a href="#/schedules" className={section === "schedules" ? "active" : ""} data-testid="nav-schedules">
            Schedules
          </a>
        </nav>
        <button
          className="link"
          data-testid="sign-out"
          onClick={() => {
            setApiKey(null);
            setAuth("signed-out");
            navigate("/workflows");
          }}
        >
          Sign out
        </button>
      </header>
      <main className="content">{page}</main>
    </div>
  );
}

async function keyWorks(): Promise<boolean> {
  if (!getApiKey()) return false;
  try {
    await api("/api/v1/workflows?page_size=1");
    return true;
  } catch (error) {
    return !(error instanceof ApiError && (error.status === 401 || error.status === 403));
  }
}

function SignIn({ onSignedIn }: { onSignedIn: () => void }) {
  const [key, setKey] = useState("");
  const [error, setError] = useState<string | null>(null);
  return (
    <div className="signin">
      <form
        onSubmit={async (event) => {
          event.preventDefault();
          setApiKey(key.trim());
          if (await keyWorks()) onSignedIn();
          else {
            setApiKey(null);
            setError("That API key was refused.");
          }
        }}
      >
        <h1>Heddle</h1>
        <label>
          API key
          <input
            data-testid="api-key"
            type="password"
            autoFocus
            placeholder="hk_…"
            value={key}
            onChange={(event) => setKey(event.target.value)}
          />
        </label>
        {error && <p className="error">{error}</p>}
        <button type="submit" className="primary" data-testid="sign-in">
          Sign in
        </button>
      </form>
    </div>
  );
}
