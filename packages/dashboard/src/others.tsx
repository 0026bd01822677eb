/** Snapshots, volumes, nodes (admin token) and API keys. */
import { useState } from "preact/hooks";
import { call, enc, loadCredentials } from "./api";
import { ErrorNote, errorText, Table, usePoll, when } from "./util";

export function SnapshotsPage() {
  const { data, error } = usePoll(
    () =>
      call<{ snapshotID: string; names?: string[]; createdAt?: string; sandboxID?: string }[]>(
        "GET",
        "/snapshots",
      ),
    5000,
  );
  return (
    <section aria-labelledby="snapshots-title">
      <h1 id="snapshots-title">Snapshots</h1>
      <ErrorNote error={error} />
      {data && data.length === 0 && (
        <p class="empty">No snapshots: make one with sandbox.createSnapshot().</p>
      )}
      {data && data.length > 0 && (
        <Table caption={`${data.length} snapshots`} head={["Snapshot", "Names", "From sandbox", "Created"]}>
          {data.map((s) => (
            <tr key={s.snapshotID}>
              <td>{s.snapshotID}</td>
              <td>{(s.names ?? []).join(", ")}</td>
              <td>{s.sandboxID ?? "—"}</td>
              <td>{when(s.createdAt)}</td>
            </tr>
          ))}
        </Table>
      )}
    </section>
  );
}

export function VolumesPage() {
  const { data, error } = usePoll(() => call<{ volumeID: string; name: string }[]>("GET", "/volumes"), 5000);
  return (
    <section aria-labelledby="volumes-title">
      <h1 id="volumes-title">Volumes</h1>
      <ErrorNote error={error} />
      {data && data.length === 0 && <p class="empty">No volumes: create one with Volume.create().</p>}
      {data && data.length > 0 && (
        <Table caption={`${data.length} volumes`} head={["Volume", "Name"]}>
          {data.map((v) => (
            <tr key={v.volumeID}>
              <td>{v.volumeID}</td>
              <td>{v.name}</td>
            </tr>
          ))}
        </Table>
      )}
    </section>
  );
}

interface NodeView {
  nodeID: string;
  status: string;
  version: string | null;
  capacity: { cpus: number; memoryMB: number } | null;
  load: {
    cpuPercent: number;
    memoryUsedMB: number;
    sandboxes: number;
    starting: number;
    poolReady: number;
  } | null;
  sandboxCount: number;
  lastHeartbeat: string | null;
}

export function NodesPage() {
  const { data, error } = usePoll(() => call<NodeView[]>("GET", "/nodes", { admin: true }), 5000);
  return (
    <section aria-labelledby="nodes-title">
      <h1 id="nodes-title">Nodes</h1>
      <ErrorNote error={error} />
      {data && (
        <Table
          caption={`${data.length} nodes`}
          head={["Node", "Status", "CPU", "Memory", "Sandboxes", "Pool ready", "Heartbeat"]}
        >
          {data.map((n) => (
            <tr key={n.nodeID}>
              <td>{n.nodeID}</td>
              <td>{n.status}</td>
              <td>
                {n.load ? `${n.load.cpuPercent.toFixed(0)}%` : "—"}
                {n.capacity ? ` of ${n.capacity.cpus}` : ""}
              </td>
              <td>
                {n.load ? `${n.load.memoryUsedMB} MiB` : "—"}
                {n.capacity ? ` of ${n.capacity.memoryMB} MiB` : ""}
              </td>
              <td>{n.sandboxCount}</td>
              <td>{n.load?.poolReady ?? "—"}</td>
              <td>{when(n.lastHeartbeat)}</td>
            </tr>
          ))}
        </Table>
      )}
    </section>
  );
}

interface APIKeyView {
  id: string;
  name: string;
  mask?: { prefix: string; maskedValuePrefix: string; maskedValueSuffix: string };
  createdAt?: string;
  createdBy?: { email?: string; id?: string } | null;
  lastUsed?: string | null;
}

export function KeysPage() {
  const { data, error, reload } = usePoll(() => call<APIKeyView[]>("GET", "/api-keys"), 0);
  const [name, setName] = useState("");
  const [created, setCreated] = useState<string>();
  const [actionError, setActionError] = useState<string>();
  const signedInWith = loadCredentials();
  const create = async (event: Event) => {
    event.preventDefault();
    setActionError(undefined);
    try {
      const key = await call<{ key: string }>("POST", "/api-keys", {
        body: { name: name.trim() || "dashboard" },
      });
      setCreated(key.key);
      setName("");
      reload();
    } catch (err) {
      setActionError(errorText(err));
    }
  };
  const revoke = async (key: APIKeyView) => {
    if (!confirm(`Revoke the key ${key.name}? Clients using it are refused from now on.`)) return;
    setActionError(undefined);
    try {
      await call("DELETE", `/api-keys/${enc(key.id)}`);
      reload();
    } catch (err) {
      setActionError(errorText(err));
    }
  };
  return (
    <section aria-labelledby="keys-title">
      <h1 id="keys-title">API keys</h1>
      <form class="inline-form" onSubmit={create}>
        <label for="key-name">New key's name</label>
        <input id="key-name" value={name} maxLength={200} onInput={(e) => setName(e.currentTarget.value)} />
        <button type="submit">Create key</button>
      </form>
      {created && (
        <p class="notice" role="status">
          New key (shown once, copy it now): <code>{created}</code>
        </p>
      )}
      <ErrorNote error={actionError ?? error} />
      {data && (
        <Table caption={`${data.length} keys`} head={["Name", "Key", "Created", "Last used", ""]}>
          {data.map((k) => (
            <tr key={k.id}>
              <td>{k.name}</td>
              <td>
                <code>
                  {k.mask ? `${k.mask.prefix}${k.mask.maskedValuePrefix}…${k.mask.maskedValueSuffix}` : "—"}
                </code>
              </td>
              <td>{when(k.createdAt)}</td>
              <td>{when(k.lastUsed ?? undefined)}</td>
              <td>
                <button type="button" class="danger" onClick={() => revoke(k)}>
                  Revoke
                </button>
              </td>
            </tr>
          ))}
        </Table>
      )}
      {signedInWith?.kind === "key" && <p class="hint">Revoking the key you signed in with signs you out.</p>}
    </section>
  );
}
