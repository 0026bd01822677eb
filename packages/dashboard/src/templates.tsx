/** Templates, their builds, and a build's logs streaming while it runs. */
import { useEffect, useRef, useState } from "preact/hooks";
import { call, enc } from "./api";
import { ErrorNote, errorText, Link, Table, usePoll, when } from "./util";

interface ListedTemplate {
  templateID: string;
  buildID: string;
  names?: string[];
  aliases?: string[];
  buildStatus?: string;
  cpuCount: number;
  memoryMB: number;
  createdAt?: string;
  updatedAt?: string;
  spawnCount?: number;
}

interface TemplateBuild {
  buildID: string;
  status: string;
  createdAt?: string;
  updatedAt?: string;
  finishedAt?: string | null;
}

interface BuildLogEntry {
  timestamp: string;
  level: string;
  message: string;
  step?: string;
}

interface BuildStatus {
  status: string;
  logEntries: BuildLogEntry[];
  reason?: { message: string; step?: string };
}

export function TemplatesPage() {
  const { data, error } = usePoll(() => call<ListedTemplate[]>("GET", "/templates"), 5000);
  return (
    <section aria-labelledby="templates-title">
      <h1 id="templates-title">Templates</h1>
      <ErrorNote error={error} />
      {data && data.length === 0 && (
        <p class="empty">No templates yet: build one with the SDK's Template.build.</p>
      )}
      {data && data.length > 0 && (
        <Table
          caption={`${data.length} templates`}
          head={["Template", "Names", "Last build", "Resources", "Updated"]}
        >
          {data.map((t) => (
            <tr key={t.templateID}>
              <td>
                <Link to={`/templates/${enc(t.templateID)}`}>{t.templateID}</Link>
              </td>
              <td>{(t.names ?? t.aliases ?? []).join(", ")}</td>
              <td>{t.buildStatus ?? "—"}</td>
              <td>
                {t.cpuCount} vCPU, {t.memoryMB} MiB
              </td>
              <td>{when(t.updatedAt ?? t.createdAt)}</td>
            </tr>
          ))}
        </Table>
      )}
    </section>
  );
}

export function TemplatePage(props: { id: string; buildID?: string }) {
  const { data, error } = usePoll(
    () =>
      call<{ templateID: string; names?: string[]; aliases?: string[]; builds: TemplateBuild[] }>(
        "GET",
        `/templates/${enc(props.id)}`,
      ),
    3000,
    [props.id],
  );
  const builds = [...(data?.builds ?? [])].sort((a, b) =>
    (b.createdAt ?? "").localeCompare(a.createdAt ?? ""),
  );
  const selected = props.buildID ?? builds[0]?.buildID;
  return (
    <section aria-labelledby="template-title">
      <h1 id="template-title">Template {props.id}</h1>
      <ErrorNote error={error} />
      {data && <p>Names: {(data.names ?? data.aliases ?? []).join(", ") || "—"}</p>}
      {builds.length > 0 && (
        <Table caption="Builds" head={["Build", "Status", "Started", "Finished"]}>
          {builds.map((b) => (
            <tr key={b.buildID} aria-current={b.buildID === selected ? "true" : undefined}>
              <td>
                <Link to={`/templates/${enc(props.id)}/builds/${enc(b.buildID)}`}>{b.buildID}</Link>
              </td>
              <td>{b.status}</td>
              <td>{when(b.createdAt)}</td>
              <td>{when(b.finishedAt ?? undefined)}</td>
            </tr>
          ))}
        </Table>
      )}
      {selected && <BuildLogs templateID={props.id} buildID={selected} />}
    </section>
  );
}

/** Polls the build's status with `logsOffset` (as the SDK does) until the build ends. */
function BuildLogs(props: { templateID: string; buildID: string }) {
  const [entries, setEntries] = useState<BuildLogEntry[]>([]);
  const [status, setStatus] = useState<BuildStatus>();
  const [error, setError] = useState<string>();
  const box = useRef<HTMLOListElement>(null);
  useEffect(() => {
    let stopped = false;
    let offset = 0;
    let timer: ReturnType<typeof setTimeout> | undefined;
    setEntries([]);
    const run = async () => {
      let done = false;
      try {
        const s = await call<BuildStatus>(
          "GET",
          `/templates/${enc(props.templateID)}/builds/${enc(props.buildID)}/status?logsOffset=${offset}`,
        );
        if (stopped) return;
        offset += s.logEntries?.length ?? 0;
        if (s.logEntries?.length) setEntries((old) => [...old, ...s.logEntries]);
        setStatus(s);
        setError(undefined);
        done = s.status === "ready" || s.status === "error";
      } catch (err) {
        if (!stopped) setError(errorText(err));
      }
      if (!stopped && !done) timer = setTimeout(run, 1000);
    };
    void run();
    return () => {
      stopped = true;
      if (timer) clearTimeout(timer);
    };
  }, [props.templateID, props.buildID]);
  useEffect(() => {
    if (box.current) box.current.scrollTop = box.current.scrollHeight;
  }, [entries]);
  return (
    <section aria-labelledby="build-logs-title">
      <h2 id="build-logs-title">
        Build {props.buildID}: <span class="build-status">{status?.status ?? "…"}</span>
      </h2>
      {status?.reason && (
        <p class="error">
          {status.reason.step ? `${status.reason.step}: ` : ""}
          {status.reason.message}
        </p>
      )}
      <ErrorNote error={error} />
      {/* biome-ignore lint/a11y/noNoninteractiveTabindex: a scrolling box must be reachable to scroll it by keyboard */}
      <ol class="logs build-logs" ref={box} tabIndex={0} aria-label="Build logs">
        {entries.map((e, i) => (
          <li key={i} class={`level-${e.level}`}>
            <time>{new Date(e.timestamp).toLocaleTimeString()}</time> <span class="level">{e.level}</span>{" "}
            <span class="message">{e.message}</span>
          </li>
        ))}
      </ol>
    </section>
  );
}
