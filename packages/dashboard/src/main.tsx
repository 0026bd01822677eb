/** The dashboard's shell: sign-in, navigation, and the page for the current path. */
import { render } from "preact";
import { useEffect, useState } from "preact/hooks";
import "uplot/dist/uPlot.min.css";
import "./style.css";
import {
  type Credentials,
  call,
  errorTextOf,
  loadCredentials,
  saveCredentials,
  UNAUTHORIZED_EVENT,
} from "./api";
import { KeysPage, NodesPage, SnapshotsPage, VolumesPage } from "./others";
import { usePath } from "./router";
import { SandboxPage } from "./sandbox";
import { SandboxesPage } from "./sandboxes";
import { TemplatePage, TemplatesPage } from "./templates";
import { Link } from "./util";

function SignIn(props: { note: string | undefined; onSignedIn: (c: Credentials) => void }) {
  const [kind, setKind] = useState<Credentials["kind"]>("key");
  const [secret, setSecret] = useState("");
  const [adminToken, setAdminToken] = useState("");
  const [error, setError] = useState<string | undefined>(props.note);
  const [busy, setBusy] = useState(false);
  const submit = async (event: Event) => {
    event.preventDefault();
    const credentials: Credentials = { kind, secret: secret.trim() };
    if (adminToken.trim()) credentials.adminToken = adminToken.trim();
    if (!credentials.secret) {
      setError(kind === "key" ? "Paste your team's API key (e2b_…)." : "Paste your access token (sk_e2b_…).");
      return;
    }
    setBusy(true);
    setError(undefined);
    try {
      await call("GET", "/v2/sandboxes?limit=1", { credentials });
      if (credentials.adminToken) await call("GET", "/nodes", { credentials, admin: true });
      saveCredentials(credentials);
      props.onSignedIn(credentials);
    } catch (err) {
      setError(`Sign-in failed: ${errorTextOf(err)}`);
    } finally {
      setBusy(false);
    }
  };
  return (
    <main id="main" class="sign-in">
      <h1>Sign in to moat</h1>
      <form onSubmit={submit}>
        <fieldset>
          <legend>Sign in with</legend>
          <label class="inline">
            <input
              type="radio"
              name="kind"
              value="key"
              checked={kind === "key"}
              onChange={() => setKind("key")}
            />{" "}
            API key
          </label>
          <label class="inline">
            <input
              type="radio"
              name="kind"
              value="token"
              checked={kind === "token"}
              onChange={() => setKind("token")}
            />{" "}
            Access token
          </label>
        </fieldset>
        <label for="secret">
          {kind === "key" ? "API key (X-API-Key)" : "Access token (Authorization: Bearer)"}
        </label>
        <input
          id="secret"
          type="password"
          autoComplete="off"
          value={secret}
          onInput={(e) => setSecret(e.currentTarget.value)}
          required
        />
        <label for="admin-token">Admin token (optional: shows the nodes)</label>
        <input
          id="admin-token"
          type="password"
          autoComplete="off"
          value={adminToken}
          onInput={(e) => setAdminToken(e.currentTarget.value)}
        />
        <p class="hint">Kept in this tab only (sessionStorage); `moat up` prints the key as E2B_API_KEY.</p>
        {error && (
          <p class="error" role="alert">
            {error}
          </p>
        )}
        <button type="submit" disabled={busy}>
          Sign in
        </button>
      </form>
    </main>
  );
}

function Page(props: { path: string }) {
  const parts = props.path.split("/").filter(Boolean).map(decodeURIComponent);
  if (parts.length === 0 || (parts.length === 1 && parts[0] === "sandboxes")) return <SandboxesPage />;
  if (parts[0] === "inspect" && parts[1] === "sandbox" && parts[2])
    return <SandboxPage id={parts[2]} key={parts[2]} />;
  if (parts[0] === "templates" && parts.length === 1) return <TemplatesPage />;
  if (parts[0] === "templates" && parts[1])
    return <TemplatePage id={parts[1]} buildID={parts[2] === "builds" ? parts[3] : undefined} />;
  if (parts[0] === "snapshots") return <SnapshotsPage />;
  if (parts[0] === "volumes") return <VolumesPage />;
  if (parts[0] === "nodes") return <NodesPage />;
  if (parts[0] === "keys") return <KeysPage />;
  return (
    <section>
      <h1>Not found</h1>
      <p>
        No dashboard page at {props.path}. <Link to="/">Sandboxes</Link>
      </p>
    </section>
  );
}

const NAV: [string, string][] = [
  ["/", "Sandboxes"],
  ["/templates", "Templates"],
  ["/snapshots", "Snapshots"],
  ["/volumes", "Volumes"],
  ["/nodes", "Nodes"],
  ["/keys", "API keys"],
];

function App() {
  const [credentials, setCredentials] = useState(loadCredentials);
  const [note, setNote] = useState<string>();
  const path = usePath();
  useEffect(() => {
    const signOut = (event: Event) => {
      saveCredentials(undefined);
      setNote(`Signed out: ${(event as CustomEvent<string>).detail}`);
      setCredentials(undefined);
    };
    window.addEventListener(UNAUTHORIZED_EVENT, signOut);
    return () => window.removeEventListener(UNAUTHORIZED_EVENT, signOut);
  }, []);
  if (!credentials) return <SignIn note={note} onSignedIn={setCredentials} />;
  const current = (to: string) =>
    to === "/" ? path === "/" || path.startsWith("/inspect") || path === "/sandboxes" : path.startsWith(to);
  return (
    <>
      <a class="skip" href="#main">
        Skip to content
      </a>
      <header>
        <span class="brand">moat</span>
        <nav aria-label="Dashboard">
          <ul>
            {NAV.filter(([to]) => to !== "/nodes" || credentials.adminToken).map(([to, label]) => (
              <li key={to}>
                <Link to={to} class={current(to) ? "current" : undefined}>
                  {label}
                </Link>
              </li>
            ))}
          </ul>
        </nav>
        <button
          type="button"
          class="sign-out"
          onClick={() => {
            saveCredentials(undefined);
            setNote(undefined);
            setCredentials(undefined);
          }}
        >
          Sign out
        </button>
      </header>
      <main id="main" tabIndex={-1}>
        <Page path={path} />
      </main>
    </>
  );
}

render(<App />, document.getElementById("app")!);
