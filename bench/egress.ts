/**
 * What a sandbox's own egress rules cost (network/egress-rules.ts, network/dns-resolver.ts), with
 * the unmodified SDK against `moat up` (no warm pool, so every create restores the snapshot):
 * create → first command with rules (a domain, deny everything else) beside one without; an
 * updateNetwork round trip; a name resolved inside a sandbox whose rules open its answer beside
 * one merely forwarded for an open sandbox. The upstream is a resolver on 127.0.0.1 in this
 * process: nothing leaves the host.
 */
import dgram from "node:dgram";
import dnsPacket from "dns-packet";
import { Sandbox } from "e2b";
import { withMoat } from "./platform.js";
import type { Figure } from "./report.js";
import { sample, summarize } from "./stats.js";

const CREATES = 15;
const UPDATES = 30;
const LOOKUPS = 200;
const NAME = "bench.moattest.test";
const RULES = { allowOut: [NAME], denyOut: ["0.0.0.0/0"] };

/** A resolver answering every A question with 203.0.113.10 (TTL 300). */
async function upstream(): Promise<{ address: string; close(): void }> {
  const socket = dgram.createSocket("udp4");
  socket.on("message", (msg, from) => {
    const q = dnsPacket.decode(msg);
    socket.send(
      dnsPacket.encode({
        type: "response",
        id: q.id,
        flags: dnsPacket.RECURSION_AVAILABLE,
        questions: q.questions,
        answers: (q.questions ?? []).map((question) => ({
          type: "A" as const,
          name: question.name,
          ttl: 300,
          data: "203.0.113.10",
        })),
      }),
      from.port,
      from.address,
    );
  });
  await new Promise<void>((r) => socket.bind(0, "127.0.0.1", r));
  return { address: `127.0.0.1:${socket.address().port}`, close: () => socket.close() };
}

async function tti(opts: Parameters<typeof Sandbox.create>[1]): Promise<number[]> {
  const out: number[] = [];
  for (let i = -1; i < CREATES; i++) {
    const start = performance.now();
    const sbx = await Sandbox.create("base", opts);
    await sbx.commands.run("true");
    if (i >= 0) out.push(performance.now() - start);
    await sbx.kill();
  }
  return out;
}

/** Milliseconds per getaddrinfo of NAME inside the sandbox (Python's own timer, no SDK in between). */
async function lookups(sbx: Sandbox): Promise<number[]> {
  const r = await sbx.commands.run(
    `python3 -c 'import socket, time, json
out = []
for i in range(${LOOKUPS + 5}):
    t = time.perf_counter(); socket.getaddrinfo("${NAME}", 80, socket.AF_INET); out.append((time.perf_counter() - t) * 1000)
print(json.dumps(out[5:]))'`,
  );
  return JSON.parse(r.stdout) as number[];
}

export async function benchEgress(): Promise<Figure[]> {
  const dns = await upstream();
  try {
    return await withMoat({ MOAT_POOL_SIZE: "0", MOAT_DNS_UPSTREAM: dns.address }, async () => {
      const plain = summarize(await tti({}));
      const ruled = summarize(await tti({ network: RULES }));
      const sbx = await Sandbox.create("base", { network: RULES });
      const open = await Sandbox.create("base");
      try {
        // Two rule sets in turn: each update changes the sandbox's table.
        let turn = 0;
        const updates = summarize(
          await sample(UPDATES, () =>
            sbx.updateNetwork(
              turn++ % 2 ? RULES : { allowOut: [NAME, "203.0.113.0/24"], denyOut: ["0.0.0.0/0"] },
            ),
          ),
        );
        const timeouts = summarize(await sample(UPDATES, () => sbx.setTimeout(300_000)));
        const admitted = summarize(await lookups(sbx));
        const forwarded = summarize(await lookups(open));
        return [
          {
            name: "create → first command, with egress rules (a domain, deny all else)",
            unit: "ms",
            value: ruled,
            baseline: { name: "without rules", value: plain },
          },
          {
            name: "updateNetwork (PUT /sandboxes/{id}/network)",
            unit: "ms",
            value: updates,
            baseline: { name: "setTimeout (another call through the API to the node)", value: timeouts },
          },
          {
            name: "a name resolved in a sandbox whose rules allow it (answer opened)",
            unit: "ms",
            value: admitted,
            baseline: { name: "the same name in an open sandbox (forwarded)", value: forwarded },
          },
        ];
      } finally {
        await Promise.allSettled([sbx.kill(), open.kill()]);
      }
    });
  } finally {
    dns.close();
  }
}
