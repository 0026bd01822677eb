/**
 * The operator's commands (`moat status | sandboxes | keys | teams`, the built CLI in a child
 * process, as root on moat up's box: credentials from its data directory) and the admin routes,
 * against `moat up` with real sandboxes and the unmodified e2b SDK. One moat for the file.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { once } from "node:events";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import { Sandbox } from "e2b";
import { type RunningMoat, startMoat, useMoat } from "../helpers/moat-up.js";

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../..");
const moatBin = path.join(repoRoot, "packages/cli/bin/moat.js");

describe("moat up: the operator's CLI and admin routes", { timeout: 600_000 }, () => {
  let moat: RunningMoat;
  /** `moat <args>` as root on this box: the data directory gives the URL and tokens. */
  const cli = async (args: string[], env: Record<string, string> = {}) => {
    const child = spawn(process.execPath, [moatBin, ...args, "--data-dir", moat.dataDir], {
      stdio: ["ignore", "pipe", "pipe"],
      env: {
        PATH: process.env.PATH ?? "/usr/bin:/bin",
        HOME: process.env.HOME ?? "/root",
        ...env,
      },
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (c: Buffer) => {
      stdout += c.toString();
    });
    child.stderr.on("data", (c: Buffer) => {
      stderr += c.toString();
    });
    const [code] = (await once(child, "exit")) as [number | null];
    return { code, stdout, stderr };
  };
  const json = async <T>(args: string[], env: Record<string, string> = {}): Promise<T> => {
    const res = await cli([...args, "--json"], env);
    assert.equal(res.code, 0, `moat ${args.join(" ")}: ${res.stderr}`);
    return JSON.parse(res.stdout) as T;
  };

  before(async () => {
    moat = await startMoat();
    useMoat(moat);
  });
  after(async () => {
    await moat?.cleanup();
  });

  test("status: the components up, the node with its load, sandboxes by state", async () => {
    const sbx = await Sandbox.create("base");
    try {
      const res = await cli(["status"]);
      assert.equal(res.code, 0, res.stderr);
      process.stdout.write(`moat status:\n${res.stdout}\n`);
      assert.match(res.stdout, /api\s+http:\/\/127\.0\.0\.1:\d+\s+up/);
      assert.match(res.stdout, /proxy\s+http:\/\/127\.0\.0\.1:\d+\s+up/);
      assert.match(res.stdout, /local\s+ready\s+1\s+\d+\s+0\s+[\d.]+%\s+[\d.]+\/[\d.]+G\s+in process/);
      assert.match(res.stdout, /warm pool: 0 ready/);
      assert.match(res.stdout, /sandboxes: 1 running/);
    } finally {
      await sbx.kill();
    }
  });

  test("sandboxes list, logs and kill as the default team; another team's key reaches none of them", async () => {
    const sbx = await Sandbox.create("base", { metadata: { owner: "ci", note: "\u001b]0;owned\u0007" } });
    try {
      const listed = await json<Array<{ sandboxID: string; metadata: Record<string, string> }>>([
        "sandboxes",
        "list",
      ]);
      assert.equal(listed.find((s) => s.sandboxID === sbx.sandboxId)?.metadata.owner, "ci");
      const table = await cli(["sandboxes", "list", "--metadata", "owner=ci"]);
      assert.match(table.stdout, new RegExp(`${sbx.sandboxId}\\s+base\\s+running`));
      assert.ok(table.stdout.includes("note=\\x1b]0;owned\\x07"), table.stdout);
      assert.equal(table.stdout.includes("\u001b"), false);

      const logs = await cli(["sandboxes", "logs", sbx.sandboxId]);
      assert.equal(logs.code, 0, logs.stderr);
      assert.match(logs.stdout, /INFO .*sandbox created/);

      const other = await json<{ teamID: string; apiKey: string }>(["teams", "create", "admin-cli-other"]);
      const theirs = await cli(["sandboxes", "kill", sbx.sandboxId], { E2B_API_KEY: other.apiKey });
      assert.equal(theirs.code, 1);
      assert.match(theirs.stderr, /404/);
      const theirLogs = await cli(["sandboxes", "logs", sbx.sandboxId], { E2B_API_KEY: other.apiKey });
      assert.equal(theirLogs.code, 1);
      assert.equal(await sbx.isRunning(), true);

      const killed = await cli(["sandboxes", "kill", sbx.sandboxId]);
      assert.equal(killed.code, 0, killed.stderr);
      assert.match(killed.stdout, /killed/);
      assert.equal(await sbx.isRunning(), false);
      const after = await cli(["sandboxes", "logs", sbx.sandboxId]);
      assert.match(after.stdout, /sandbox stopped/, "the log is kept after the end");
    } finally {
      await sbx.kill().catch(() => undefined);
    }
  });

  test("keys: a created key works with the SDK until revoked; teams list shows every team", async () => {
    const created = await json<{ id: string; key: string }>(["keys", "create", "admin-cli"]);
    const sbx = await Sandbox.create("base", { apiKey: created.key });
    await sbx.kill();
    const listed = await json<Array<{ id: string; lastUsed: string | null }>>(["keys", "list"]);
    assert.ok(listed.find((k) => k.id === created.id)?.lastUsed, "lastUsed set by the SDK's calls");
    const revoked = await cli(["keys", "revoke", created.id]);
    assert.equal(revoked.code, 0, revoked.stderr);
    await assert.rejects(
      Sandbox.create("base", { apiKey: created.key }),
      /401|[Ii]nvalid API key|Unauthorized/,
    );
    const teams = await cli(["teams", "list"]);
    assert.match(teams.stdout, /default \(default\)/);
    assert.match(teams.stdout, /admin-cli-other/);
  });

  test("the operator kills a team's sandboxes and no one else's", async () => {
    const team = await json<{ teamID: string; apiKey: string }>(["teams", "create", "admin-cli-kill"]);
    const [victim, bystander] = await Promise.all([
      Sandbox.create("base", { apiKey: team.apiKey }),
      Sandbox.create("base"),
    ]);
    try {
      const res = await fetch(`${moat.env.E2B_API_URL}/admin/teams/${team.teamID}/sandboxes/kill`, {
        method: "POST",
        headers: { "X-Admin-Token": moat.env.MOAT_ADMIN_TOKEN! },
      });
      assert.equal(res.status, 200);
      assert.deepEqual(await res.json(), { killedCount: 1, failedCount: 0 });
      assert.equal(await victim.isRunning(), false);
      assert.equal(await bystander.isRunning(), true);
      const counts = (await (
        await fetch(`${moat.env.E2B_API_URL}/admin/sandboxes/running-counts`, {
          headers: { "X-Admin-Token": moat.env.MOAT_ADMIN_TOKEN! },
        })
      ).json()) as Record<string, number>;
      assert.equal(counts[team.teamID], undefined);
    } finally {
      await Promise.all([victim.kill().catch(() => undefined), bystander.kill()]);
    }
  });
});
