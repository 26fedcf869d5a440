import { useEffect, useState } from "react";
import { ApiError, api, consoleConfig, getApiKey, setApiKey } from "./lib/api";
import { navigate, useRoute } from "./lib/router";
import { EditorPage } from "./editor/EditorPage";
import { WorkflowList } from "./runs/WorkflowList";
import { ExecutionList } from "./runs/ExecutionList";
import { ExecutionView } from "./runs/ExecutionView";
import { ScheduleList } from "./runs/ScheduleList";
import { RunPage } from "./runs/RunPage";
import { AgentList, AgentPage } from "./agents/AgentsPage";
import { cycleTheme, useTheme } from "./lib/theme";

type Auth = "checking" | "signed-in" | "signed-out";

// Set by "Sign out" for this tab, so that the development key is not taken again at once.
const SIGNED_OUT = "heddle.signedOut";

export function App() {
  const route = useRoute();
  const [auth, setAuth] = useState<Auth>("checking");
  const [jaegerUrl, setJaegerUrl] = useState<string | null>(null);
  const [devKey, setDevKey] = useState<string | null>(null);

  useEffect(() => {
    (async () => {
      const config = await consoleConfig();
      setJaegerUrl(config.jaeger_url);
      setDevKey(config.dev_api_key);
      const stored = getApiKey();
      if (stored && (await checkKey()) !== "refused") return setAuth("signed-in");
      // No key, or a stale one (the embedded stack of `make run` may have a new dev key).
      const offered = config.dev_api_key;
      if (offered && offered !== stored && !sessionStorage.getItem(SIGNED_OUT)) {
        setApiKey(offered);
        if ((await checkKey()) !== "refused") return setAuth("signed-in");
      }
      setApiKey(null);
      setAuth("signed-out");
    })();
  }, []);

  if (auth === "checking") return <div className="splash">Loading…</div>;
  if (auth === "signed-out")
    return (
      <SignIn
        devKey={devKey}
        onSignedIn={() => {
          sessionStorage.removeItem(SIGNED_OUT);
          setAuth("signed-in");
        }}
      />
    );

  const [section = "workflows", id, sub] = route;
  let page;
  if (section === "workflows" && id && sub === "run") page = <RunPage workflowId={id} key={id} />;
  else if (section === "workflows" && id) page = <EditorPage workflowId={id === "new" ? null : id} key={id} />;
  else if (section === "executions" && id) page = <ExecutionView executionId={id} jaegerUrl={jaegerUrl} key={id} />;
  else if (section === "executions") page = <ExecutionList />;
  else if (section === "schedules") page = <ScheduleList />;
  else if (section === "agents" && id) page = <AgentPage agentId={id === "new" ? null : id} key={id} />;
  else if (section === "agents") page = <AgentList />;
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
          <a href="#/agents" className={section === "agents" ? "active" : ""} data-testid="nav-agents">
            Agents
          </a>
        </nav>
        <ThemeToggle />
        <span className="who" title="The API key this console uses">
          {keyLabel(getApiKey())}
        </span>
        <button
          className="link signout"
          data-testid="sign-out"
          onClick={() => {
            setApiKey(null);
            sessionStorage.setItem(SIGNED_OUT, "1");
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

const THEME_LABEL = { system: "◐ System", dark: "☾ Dark", light: "☀ Light" };

function ThemeToggle() {
  const { choice, theme } = useTheme();
  return (
    <button
      type="button"
      className="link theme-toggle"
      data-testid="theme-toggle"
      data-choice={choice}
      title={`Theme: ${choice}${choice === "system" ? ` (${theme} now)` : ""}; click for the next`}
      onClick={cycleTheme}
    >
      {THEME_LABEL[choice]}
    </button>
  );
}

/** The visible part of a key (`hk_<prefix>_<secret>` → `hk_<prefix>`), never the secret. */
function keyLabel(key: string | null): string {
  const parts = (key ?? "").split("_");
  return parts.length >= 3 && parts[0] === "hk" ? `${parts[0]}_${parts[1]}` : "API key";
}

type KeyCheck = "ok" | "refused" | "unreachable";

/** Whether the gateway takes the stored key. `GET /console/session` answers 200 either way,
 * so a refused key logs no error in the browser; a gateway that is up but answers an error
 * (a dependency down) signs nobody out. */
async function checkKey(): Promise<KeyCheck> {
  if (!getApiKey()) return "refused";
  try {
    const session = await api<{ signed_in: boolean }>("/console/session");
    return session.signed_in ? "ok" : "refused";
  } catch (error) {
    return error instanceof ApiError ? "ok" : "unreachable";
  }
}

function SignIn({ devKey, onSignedIn }: { devKey: string | null; onSignedIn: () => void }) {
  const [key, setKey] = useState("");
  const [error, setError] = useState<string | null>(null);
  const [checking, setChecking] = useState(false);

  const signIn = async (candidate: string) => {
    setChecking(true);
    setError(null);
    setApiKey(candidate.trim());
    const result = await checkKey();
    setChecking(false);
    if (result === "ok") return onSignedIn();
    setApiKey(null);
    setError(
      result === "refused"
        ? "That API key was refused. Check that it is complete and not revoked or expired."
        : "The gateway could not be reached. Is Heddle running?",
    );
  };

  return (
    <div className="signin">
      <form
        data-testid="sign-in-form"
        onSubmit={(event) => {
          event.preventDefault();
          signIn(key);
        }}
      >
        <div className="signin-brand">Heddle</div>
        <h1>Sign in</h1>
        <p className="muted">
          Paste an API key (<code>hk_…</code>). The development key of <code>make run</code> is
          in <code>var/dev-api-key</code>; an admin creates more keys with{" "}
          <code>POST /api/v1/api-keys</code>.
        </p>
        <label>
          API key
          <input
            data-testid="api-key"
            type="password"
            autoFocus
            autoComplete="current-password"
            placeholder="hk_…"
            value={key}
            onChange={(event) => setKey(event.target.value)}
            aria-invalid={error !== null}
          />
        </label>
        {error && (
          <p className="error" role="alert" data-testid="sign-in-error">
            {error}
          </p>
        )}
        <button type="submit" className="primary" data-testid="sign-in" disabled={checking || !key.trim()}>
          {checking ? "Checking…" : "Sign in"}
        </button>
        {devKey && (
          <button type="button" data-testid="sign-in-dev" disabled={checking} onClick={() => signIn(devKey)}>
            Use the development key
          </button>
        )}
      </form>
    </div>
  );
}
