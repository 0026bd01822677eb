import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import type { Command } from "commander";
import { moatProgram } from "../src/program.js";

let dir: string;
before(async () => {
  dir = await mkdtemp(path.join(tmpdir(), "moat-config-"));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** Parses `argv` as `moat <argv>` with every action a no-op; answers the command's options, or the error. */
async function parse(
  argv: string[],
  env: Record<string, string> = {},
): Promise<{ opts?: Record<string, unknown>; error?: string }> {
  const program = moatProgram();
  let seen: Record<string, unknown> | undefined;
  let error: string | undefined;
  const quiet = (cmd: Command) =>
    cmd
      .exitOverride()
      .configureOutput({ writeErr: (text) => (error = (error ?? "") + text), writeOut: () => undefined });
  quiet(program);
  for (const cmd of program.commands) {
    quiet(cmd);
    cmd.action((opts: Record<string, unknown>) => {
      seen = opts;
    });
  }
  const saved = { ...process.env };
  for (const name of Object.keys(process.env))
    if (name.startsWith("MOAT_") || name === "DATABASE_URL") delete process.env[name];
  Object.assign(process.env, env);
  try {
    await program.parseAsync(["node", "moat", ...argv]);
  } catch (err) {
    error ??= (err as Error).message;
  } finally {
    process.env = saved;
  }
  return error ? { error } : { opts: seen };
}

async function file(name: string, text: string): Promise<string> {
  const p = path.join(dir, name);
  await writeFile(p, text);
  return p;
}

describe("config files (--config / MOAT_CONFIG)", () => {
  test("YAML keys are the flags in camelCase; a command's section wins over the top level", async () => {
    const config = await file(
      "a.yaml",
      "dataDir: /srv/moat\nport: 6000\norchestrator:\n  port: 5010\n  nodeId: node-1\n  namePrefix: moat-1-\napi:\n  node: [a=http://10.98.1.2:5008, b=http://10.98.2.2:5008]\n",
    );
    const orch = await parse(["orchestrator", "--config", config]);
    assert.equal(orch.opts?.dataDir, "/srv/moat");
    assert.equal(orch.opts?.port, 5010);
    assert.equal(orch.opts?.nodeId, "node-1");
    assert.equal(orch.opts?.namePrefix, "moat-1-");
    const api = await parse(["api", "--config", config]);
    assert.equal(api.opts?.port, 6000);
    assert.deepEqual(api.opts?.node, [
      { id: "a", url: "http://10.98.1.2:5008" },
      { id: "b", url: "http://10.98.2.2:5008" },
    ]);
  });

  test("JSON works too, named by MOAT_CONFIG", async () => {
    const config = await file(
      "b.json",
      JSON.stringify({ proxy: { port: 4002, redisUrl: "redis://127.0.0.1:6379" } }),
    );
    const proxy = await parse(["proxy"], { MOAT_CONFIG: config });
    assert.equal(proxy.opts?.port, 4002);
    assert.equal(proxy.opts?.redisUrl, "redis://127.0.0.1:6379");
  });

  test("flags win over the environment, which wins over the file, which wins over the defaults", async () => {
    const config = await file(
      "c.yaml",
      "orchestrator:\n  nodeId: from-file\n  namePrefix: moat-f-\n  dataDir: /file\n",
    );
    const env = { MOAT_NODE_ID: "from-env", MOAT_DATA_DIR: "/env" };
    const { opts } = await parse(["orchestrator", "--config", config, "--node-id", "from-flag"], env);
    assert.equal(opts?.nodeId, "from-flag");
    assert.equal(opts?.dataDir, "/env");
    assert.equal(opts?.namePrefix, "moat-f-");
    assert.equal(opts?.port, 5008);
  });

  test("unknown keys and bad values are errors naming the key and what it accepts", async () => {
    const cases: Array<[string, RegExp]> = [
      ["nodeID: a\n", /unknown key 'nodeID' \(no command has a flag --node-i-d/],
      [
        "orchestrator:\n  redisUrl: redis://x\n",
        /unknown key 'orchestrator.redisUrl': moat orchestrator accepts .*nodeId/,
      ],
      [
        "orchestrator:\n  port: 70000\n",
        /orchestrator.port: '70000': expected a port number between 0 and 65535/,
      ],
      ["orchestrator:\n  namePrefix: ../x\n", /orchestrator.namePrefix: .*the name prefix must be/],
      ["orchestrator:\n  port: [1, 2]\n", /orchestrator.port: takes one value, not a list/],
      ["api:\n  node: [nonsense]\n", /api.node: 'nonsense': expected <id>=<url>/],
      ["orchestrator: 3\n", /orchestrator: must be a mapping/],
      ["- a\n- b\n", /must hold a mapping/],
      ["a: [\n", /is not valid YAML or JSON/],
    ];
    for (const [text, message] of cases) {
      const config = await file("bad.yaml", text);
      const { error } = await parse([text.startsWith("api") ? "api" : "orchestrator", "--config", config]);
      assert.match(error ?? "", message, text);
    }
    const { error } = await parse(["orchestrator", "--config", path.join(dir, "missing.yaml")]);
    assert.match(error ?? "", /missing.yaml: cannot be read \(ENOENT\)/);
  });

  test("a key another command has is ignored at the top level (one file for every component)", async () => {
    const config = await file("d.yaml", "redisUrl: redis://127.0.0.1:6379\nnodeId: n1\n");
    const { opts } = await parse(["orchestrator", "--config", config]);
    assert.equal(opts?.nodeId, "n1");
    assert.equal(opts?.redisUrl, undefined);
  });
});
