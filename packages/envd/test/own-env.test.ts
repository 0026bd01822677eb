/**
 * envd's own environment is not its commands': the node starts envd with variables that tune envd
 * itself (MALLOC_ARENA_MAX, runtime/oci-spec.ts), and a command must not inherit them.
 */
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir, userInfo } from "node:os";
import path from "node:path";
import { after, before, test } from "node:test";
import { Sandbox } from "e2b";
import { type Envd, startEnvd } from "../src/server.js";

let envd: Envd;
const saved = process.env.MALLOC_ARENA_MAX;
before(async () => {
  process.env.MALLOC_ARENA_MAX = "1";
  envd = await startEnvd({ port: 0, host: "127.0.0.1", defaultUser: userInfo().username });
});
after(async () => {
  await envd?.close();
  if (saved === undefined) delete process.env.MALLOC_ARENA_MAX;
  else process.env.MALLOC_ARENA_MAX = saved;
});

test("a command sees the sandbox's environment, not envd's own tuning variables", async () => {
  const sbx = new Sandbox({
    sandboxId: "local",
    envdVersion: "0.6.13",
    sandboxUrl: `http://127.0.0.1:${envd.port}`,
    apiKey: "e2b_0000000000000000000000000000000000000000",
  } as ConstructorParameters<typeof Sandbox>[0]);
  // An empty HOME: the host's own login profile (slow version managers) is not what is tested.
  const home = await mkdtemp(path.join(tmpdir(), "moat-own-env-"));
  const res = await sbx.commands.run("env", { user: userInfo().username, envs: { OWN: "yes", HOME: home } });
  await rm(home, { recursive: true, force: true });
  assert.match(res.stdout, /^OWN=yes$/m);
  assert.match(res.stdout, /^PATH=/m);
  assert.doesNotMatch(res.stdout, /MALLOC_ARENA_MAX/);
});
