import assert from "node:assert/strict";
import { test } from "node:test";
import { ENVD_ENV, ENVD_NODE_FLAGS, SANDBOX_NODE_PATH, sandboxSpec } from "../src/runtime/oci-spec.js";

const spec = sandboxSpec({
  sandboxID: "s",
  containerID: "moat-s-1",
  rootfs: "/r",
  netnsPath: "/n",
  vcpu: 1,
  memoryMB: 512,
  pidsLimit: 100,
  nodeBinary: "/node",
  envdDir: "/envd",
  envdPort: 49983,
}) as { process: { args: string[]; env: string[] } };

test("envd runs with its lean memory flags (node options before the script) and environment", () => {
  const { args, env } = spec.process;
  const node = args.indexOf(SANDBOX_NODE_PATH);
  const script = args.indexOf("/opt/moat/envd/envd.mjs");
  assert.ok(node >= 0 && script > node);
  assert.deepEqual(args.slice(node + 1, script), ENVD_NODE_FLAGS);
  assert.ok(ENVD_NODE_FLAGS.includes("--max-semi-space-size=1"));
  for (const entry of ENVD_ENV) assert.ok(env.includes(entry));
  assert.ok(env.includes("MALLOC_ARENA_MAX=1"));
});
