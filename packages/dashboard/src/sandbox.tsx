/** One sandbox: details, live logs, metrics chart, pause/resume/kill/extend, links to its ports. */
import { useEffect, useRef, useState } from "preact/hooks";
import { APIError, call, enc, type LogEntry, type SandboxDetail, type SandboxMetric } from "./api";
import { TimeChart } from "./chart";
import { navigate } from "./router";
import { ErrorNote, errorText, Link, mib, usePoll, when } from "./util";

/** Log lines kept in the page; older ones are dropped from the top. */
const MAX_LOG_LINES = 5000;

export function SandboxPage(props: { id: string }) {
  const { id } = props;
  const [gone, setGone] = useState(false);
  const detail = usePoll<SandboxDetail>(
    () =>
      call<SandboxDetail>("GET", `/sandboxes/${enc(id)}`).catch((err: unknown) => {
        if (err instanceof APIError && err.status === 404) setGone(true);
        throw err;
      }),
    gone ? 0 : 3000,
    [id, gone],
  );
  const [actionError, setActionError] = useState<string>();
  const [busy, setBusy] = useState(false);

  const act = async (label: string, run: () => Promise<unknown>) => {
    setBusy(true);
    setActionError(undefined);
    try {
      await run();
      if (label === "kill") navigate("/");
      else detail.reload();
    } catch (err) {
      setActionError(`${label} failed: ${errorText(err)}`);
    } finally {
      setBusy(false);
    }
  };

  const s = detail.data;
  if (gone && !s) {
    return (
      <section>
        <h1>Sandbox {id}</h1>
        <p class="error" role="alert">
          No sandbox {id} in your team: it ended, or it belongs to another team.{" "}
          <Link to="/">All sandboxes</Link>
        </p>
      </section>
    );
  }
  return (
    <section aria-labelledby="sandbox-title">
      <h1 id="sandbox-title">Sandbox {id}</h1>
      <ErrorNote error={gone ? undefined : detail.error} />
      {s && (
        <>
          <dl class="facts">
            <dt>State</dt>
            <dd>
              <span class={`state state-${s.state}`}>{s.state}</span>
            </dd>
            <dt>Template</dt>
            <dd>{s.alias ? `${s.alias} (${s.templateID})` : s.templateID}</dd>
            <dt>Resources</dt>
            <dd>
              {s.cpuCount} vCPU, {s.memoryMB} MiB memory, {s.diskSizeMB} MiB disk
            </dd>
            <dt>Started</dt>
            <dd>{when(s.startedAt)}</dd>
            <dt>Ends</dt>
            <dd>{when(s.endAt)}</dd>
            <dt>Metadata</dt>
            <dd class="metadata">
              {Object.entries(s.metadata ?? {}).map(([k, v]) => (
                <span class="tag" key={k}>
                  {k}={v}
                </span>
              ))}
            </dd>
          </dl>
          <div class="actions">
            {s.state === "running" ? (
              <button
                type="button"
                disabled={busy}
                onClick={() => act("pause", () => call("POST", `/sandboxes/${enc(id)}/pause`, { body: {} }))}
              >
                Pause
              </button>
            ) : (
              <button
                type="button"
                disabled={busy}
                onClick={() =>
                  act("resume", () =>
                    call("POST", `/sandboxes/${enc(id)}/connect`, { body: { timeout: 300 } }),
                  )
                }
              >
                Resume
              </button>
            )}
            <button
              type="button"
              disabled={busy}
              onClick={() =>
                act("extend", () => {
                  const left = Math.max(0, Math.round((Date.parse(s.endAt) - Date.now()) / 1000));
                  return call("POST", `/sandboxes/${enc(id)}/timeout`, { body: { timeout: left + 300 } });
                })
              }
            >
              Extend by 5 minutes
            </button>
            <button
              type="button"
              class="danger"
              disabled={busy}
              onClick={() => {
                if (confirm(`Kill sandbox ${id}? Its files and processes are lost.`))
                  void act("kill", () => call("DELETE", `/sandboxes/${enc(id)}`));
              }}
            >
              Kill
            </button>
          </div>
          <ErrorNote error={actionError} />
          <Ports id={s.sandboxID} domain={s.domain ?? undefined} />
        </>
      )}
      <Metrics id={id} stopped={gone} />
      <Logs id={id} stopped={gone} />
    </section>
  );
}

function Ports(props: { id: string; domain: string | undefined }) {
  const [port, setPort] = useState("");
  if (!props.domain) return null;
  const valid = /^\d{1,5}$/.test(port) && Number(port) >= 1 && Number(port) <= 65535;
  const href = `${location.protocol}//${port}-${props.id}.${props.domain}/`;
  return (
    <form class="ports" onSubmit={(e) => e.preventDefault()}>
      <label for="port">Open a port through the proxy</label>
      <input
        id="port"
        inputMode="numeric"
        value={port}
        onInput={(e) => setPort(e.currentTarget.value.trim())}
        placeholder="8080"
      />
      {valid && (
        <a href={href} target="_blank" rel="noopener noreferrer">
          {`${port}-${props.id}.${props.domain}`}
        </a>
      )}
    </form>
  );
}

/** What the sandbox chart first reads: under an hour, so that every sample comes back. */
const HISTORY_SECONDS = 59 * 60;

function Metrics(props: { id: string; stopped: boolean }) {
  const points = useRef(new Map<number, SandboxMetric>());
  const [data, setData] = useState<number[][]>([[], [], []]);
  const { error } = usePoll(
    async () => {
      // A range under an hour comes back sample by sample; an hour or more, averaged over 30 s
      // buckets (the API's steps, as E2B's). So the first read takes the last 59 minutes and each
      // later one only what came since the newest point.
      const end = Math.floor(Date.now() / 1000);
      const newest = [...points.current.keys()].at(-1);
      const start = newest ?? end - HISTORY_SECONDS;
      const readings = await call<SandboxMetric[]>(
        "GET",
        `/sandboxes/${enc(props.id)}/metrics?start=${start}&end=${Math.max(end, start)}`,
      );
      for (const m of readings ?? []) points.current.set(m.timestampUnix, m);
      // Oldest first, and no more than an hour's worth at the default 5 s interval.
      const sorted = [...points.current.values()]
        .sort((a, b) => a.timestampUnix - b.timestampUnix)
        .slice(-720);
      points.current = new Map(sorted.map((m) => [m.timestampUnix, m]));
      setData([
        sorted.map((m) => m.timestampUnix),
        sorted.map((m) => m.cpuUsedPct),
        sorted.map((m) => m.memUsed / 1024 / 1024),
      ]);
      return readings;
    },
    props.stopped ? 0 : 2000,
    [props.id, props.stopped],
  );
  const last = points.current.size > 0 ? [...points.current.values()].at(-1) : undefined;
  return (
    <section aria-labelledby="metrics-title">
      <h2 id="metrics-title">Metrics</h2>
      <ErrorNote error={error} />
      {last && (
        <p>
          CPU {last.cpuUsedPct.toFixed(1)}% of {last.cpuCount} vCPU · memory {mib(last.memUsed)} of{" "}
          {mib(last.memTotal)} · disk {mib(last.diskUsed)} of {mib(last.diskTotal)}
        </p>
      )}
      <TimeChart
        title="CPU and memory"
        series={[
          { label: "CPU %", scale: "left", color: "#2563eb", unit: "%" },
          { label: "Memory MiB", scale: "right", color: "#16a34a", unit: "" },
        ]}
        data={data}
      />
    </section>
  );
}

/**
 * Tails the sandbox's logs: `GET /v2/sandboxes/{id}/logs?cursor=<last ms>&direction=forward` every
 * second, or the v1 route where the API has no v2 one. Entries at the cursor's millisecond come
 * again; they are told apart by their content.
 */
function Logs(props: { id: string; stopped: boolean }) {
  const [lines, setLines] = useState<LogEntry[]>([]);
  const [error, setError] = useState<string>();
  const [follow, setFollow] = useState(true);
  const box = useRef<HTMLOListElement>(null);
  useEffect(() => {
    let stopped = false;
    let timer: ReturnType<typeof setTimeout> | undefined;
    let cursor = 0;
    let seenAtCursor = new Set<string>();
    let v1 = false;
    const fetchEntries = async (): Promise<LogEntry[]> => {
      if (!v1) {
        try {
          const r = await call<{ logs: LogEntry[] }>(
            "GET",
            `/v2/sandboxes/${enc(props.id)}/logs?cursor=${cursor}&direction=forward&limit=1000`,
          );
          return r.logs ?? [];
        } catch (err) {
          if (!(err instanceof APIError && err.status === 404 && /no route/i.test(err.message))) throw err;
          v1 = true;
        }
      }
      const r = await call<{ logEntries: LogEntry[] }>(
        "GET",
        `/sandboxes/${enc(props.id)}/logs?start=${cursor}&limit=1000`,
      );
      return r.logEntries ?? [];
    };
    const run = async () => {
      try {
        const entries = await fetchEntries();
        const fresh: LogEntry[] = [];
        for (const e of entries) {
          const ms = Date.parse(e.timestamp);
          const key = `${e.timestamp}\u0000${e.level}\u0000${e.message}`;
          if (ms < cursor || (ms === cursor && seenAtCursor.has(key))) continue;
          if (ms > cursor) {
            cursor = ms;
            seenAtCursor = new Set();
          }
          seenAtCursor.add(key);
          fresh.push(e);
        }
        if (!stopped && fresh.length > 0) setLines((old) => [...old, ...fresh].slice(-MAX_LOG_LINES));
        if (!stopped) setError(undefined);
      } catch (err) {
        if (!stopped) setError(errorText(err));
      }
      if (!stopped && !props.stopped) timer = setTimeout(run, 1000);
    };
    void run();
    return () => {
      stopped = true;
      if (timer) clearTimeout(timer);
    };
  }, [props.id, props.stopped]);
  useEffect(() => {
    if (follow && box.current) box.current.scrollTop = box.current.scrollHeight;
  }, [lines, follow]);
  return (
    <section aria-labelledby="logs-title">
      <h2 id="logs-title">Logs</h2>
      <label class="inline">
        <input type="checkbox" checked={follow} onChange={(e) => setFollow(e.currentTarget.checked)} /> Follow
        new lines
      </label>
      <ErrorNote error={error} />
      {/* biome-ignore lint/a11y/noNoninteractiveTabindex: a scrolling box must be reachable to scroll it by keyboard */}
      <ol class="logs" ref={box} tabIndex={0} aria-label="Sandbox logs" aria-live="off">
        {lines.length === 0 && <li class="empty">No log lines yet.</li>}
        {lines.map((e, i) => (
          <li key={i} class={`level-${e.level}`}>
            <time>{new Date(e.timestamp).toLocaleTimeString()}</time> <span class="level">{e.level}</span>{" "}
            <span class="message">{e.message}</span>
            {Object.entries(e.fields ?? {}).map(([k, v]) => (
              <span class="field" key={k}>
                {" "}
                {k}={v}
              </span>
            ))}
          </li>
        ))}
      </ol>
    </section>
  );
}
