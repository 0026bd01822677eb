import { ENVD_PORT } from "@moat/shared";

export interface EnvdInit {
  envVars: Record<string, string>;
  accessToken?: string;
  defaultUser?: string;
  defaultWorkdir?: string;
}

/** Polls envd's /health at the sandbox's host address until it answers 204. */
export async function waitForEnvd(
  hostAddress: string,
  timeoutMs: number,
  signal?: AbortSignal,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  const url = `http://${hostAddress}:${ENVD_PORT}/health`;
  let lastError = "no answer";
  while (Date.now() < deadline) {
    signal?.throwIfAborted();
    try {
      const res = await fetch(url, { signal: AbortSignal.timeout(1000) });
      if (res.status === 204) return;
      lastError = `status ${res.status}`;
    } catch (err) {
      lastError =
        err instanceof Error ? (err.cause instanceof Error ? err.cause.message : err.message) : String(err);
    }
    await new Promise((r) => setTimeout(r, 5));
  }
  throw new Error(`envd at ${hostAddress} did not become ready within ${timeoutMs} ms (${lastError})`);
}

/** POST /init: env vars, token, defaults and the clock, as the orchestrator does after every start. */
export async function initEnvd(hostAddress: string, init: EnvdInit): Promise<void> {
  const res = await fetch(`http://${hostAddress}:${ENVD_PORT}/init`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ ...init, timestamp: new Date().toISOString() }),
    signal: AbortSignal.timeout(10_000),
  });
  if (res.status !== 204) throw new Error(`envd /init answered ${res.status}: ${await res.text()}`);
}
