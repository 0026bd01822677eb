/** The team's sandboxes: state, template, node, metadata, times, live CPU and memory, and a chart. */
import { useRef, useState } from "preact/hooks";
import { call, enc, type ListedSandbox, type SandboxMetric } from "./api";
import { TimeChart } from "./chart";
import { ErrorNote, Link, mib, Table, usePoll, when } from "./util";

/** Points kept for the team chart (one every poll: 2 s → 20 minutes). */
const MAX_POINTS = 600;

interface Listing {
  sandboxes: (ListedSandbox & { nodeID?: string })[];
  metrics: Record<string, SandboxMetric>;
}

export function SandboxesPage() {
  const history = useRef<number[][]>([[], [], []]);
  const [chart, setChart] = useState<number[][]>([[], [], []]);
  const { data, error } = usePoll<Listing>(async () => {
    const sandboxes = await call<Listing["sandboxes"]>("GET", "/v2/sandboxes?state=running,paused&limit=100");
    const running = sandboxes.filter((s) => s.state === "running").map((s) => s.sandboxID);
    let metrics: Record<string, SandboxMetric> = {};
    if (running.length > 0) {
      metrics = await call<{ sandboxes: Record<string, SandboxMetric> }>(
        "GET",
        `/sandboxes/metrics?sandbox_ids=${running.map(enc).join(",")}`,
      )
        .then((r) => r.sandboxes ?? {})
        .catch(() => ({}));
    }
    const readings = Object.values(metrics);
    const [t, cpu, mem] = history.current as [number[], number[], number[]];
    t.push(Math.round(Date.now() / 1000));
    cpu.push(readings.length ? readings.reduce((a, m) => a + m.cpuUsedPct, 0) / readings.length : 0);
    mem.push(readings.reduce((a, m) => a + m.memUsed, 0) / 1024 / 1024);
    if (t.length > MAX_POINTS) for (const s of history.current) s.shift();
    setChart([[...t], [...cpu], [...mem]]);
    return { sandboxes, metrics };
  }, 2000);

  return (
    <section aria-labelledby="sandboxes-title">
      <h1 id="sandboxes-title">Sandboxes</h1>
      <ErrorNote error={error} />
      <TimeChart
        title="Running sandboxes: mean CPU and total memory"
        series={[
          { label: "CPU %", scale: "left", color: "#2563eb", unit: "%" },
          { label: "Memory MiB", scale: "right", color: "#16a34a", unit: "" },
        ]}
        data={chart}
      />
      {data && data.sandboxes.length === 0 && <p class="empty">No sandboxes are running or paused.</p>}
      {data && data.sandboxes.length > 0 && (
        <Table
          caption={`${data.sandboxes.length} sandboxes`}
          head={["Sandbox", "State", "Template", "Node", "CPU", "Memory", "Started", "Ends", "Metadata"]}
        >
          {data.sandboxes.map((s) => {
            const m = data.metrics[s.sandboxID];
            return (
              <tr key={s.sandboxID} data-sandbox-id={s.sandboxID}>
                <td>
                  <Link to={`/inspect/sandbox/${enc(s.sandboxID)}`}>{s.sandboxID}</Link>
                </td>
                <td>
                  <span class={`state state-${s.state}`}>{s.state}</span>
                </td>
                <td>{s.alias ?? s.templateID}</td>
                <td>{s.nodeID ?? s.clientID}</td>
                <td>{m ? `${m.cpuUsedPct.toFixed(1)}% of ${m.cpuCount}` : `${s.cpuCount} vCPU`}</td>
                <td>{m ? `${mib(m.memUsed)} / ${mib(m.memTotal)}` : `${s.memoryMB} MiB`}</td>
                <td>{when(s.startedAt)}</td>
                <td>{when(s.endAt)}</td>
                <td class="metadata">
                  {Object.entries(s.metadata ?? {}).map(([k, v]) => (
                    <span class="tag" key={k}>
                      {k}={v}
                    </span>
                  ))}
                </td>
              </tr>
            );
          })}
        </Table>
      )}
    </section>
  );
}
