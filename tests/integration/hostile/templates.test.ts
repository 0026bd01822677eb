/**
 * Hostile tenants and template builds, against `moat up` with the unmodified e2b SDK and two teams
 * (the second made through the admin route): a team that uploads crafted files under the hash of
 * another team's files and builds first gets only its own files; a RUN step or a start command
 * that generates a secret gives each team its own; a file changed after its upload is refused;
 * another team's private template reads as missing.
 */
import assert from "node:assert/strict";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { Sandbox, Template, waitForFile } from "e2b";
import * as tar from "tar";
import { type RunningMoat, startMoat } from "../helpers/moat-up.js";

interface Team {
  teamID: string;
  apiKey: string;
}

describe("hostile tenants: template builds are the team's own", { timeout: 1_800_000 }, () => {
  let moat: RunningMoat;
  let work: string;
  let teamA: Team;
  let teamB: Team;
  const sandboxes: Sandbox[] = [];

  const opts = (team: Team) => ({
    apiKey: team.apiKey,
    apiUrl: moat.env.E2B_API_URL,
    sandboxUrl: moat.env.E2B_SANDBOX_URL,
  });

  /** A call to the API as `team`, as the SDK would make it (or would not: a hostile client). */
  async function call(team: Team, method: string, route: string, json?: unknown) {
    const res = await fetch(`${moat.env.E2B_API_URL}${route}`, {
      method,
      headers: {
        "x-api-key": team.apiKey,
        ...(json === undefined ? {} : { "content-type": "application/json" }),
      },
      body: json === undefined ? undefined : JSON.stringify(json),
    });
    const text = await res.text();
    return { status: res.status, body: text ? (JSON.parse(text) as Record<string, unknown>) : {} };
  }

  /** Builds `serialized` (the SDK's start body) under `name` as `team`, uploading `tars` by hash as given. */
  async function buildRaw(
    team: Team,
    name: string,
    serialized: Record<string, unknown>,
    tars: Map<string, Buffer>,
  ): Promise<{ status: string; reason?: unknown; logs: string[]; templateID: string }> {
    const requested = await call(team, "POST", "/v3/templates", { name, cpuCount: 1, memoryMB: 512 });
    assert.equal(requested.status, 202, JSON.stringify(requested.body));
    const { templateID, buildID } = requested.body as { templateID: string; buildID: string };
    for (const [hash, bytes] of tars) {
      const link = await call(team, "GET", `/templates/${templateID}/files/${hash}`);
      assert.equal(link.status, 201, JSON.stringify(link.body));
      if (link.body.present) continue;
      const put = await fetch(link.body.url as string, {
        method: "PUT",
        headers: { "content-type": "application/octet-stream" },
        body: bytes,
      });
      assert.equal(put.status, 200, await put.text());
    }
    const started = await call(team, "POST", `/v2/templates/${templateID}/builds/${buildID}`, serialized);
    assert.equal(started.status, 202, JSON.stringify(started.body));
    const logs: string[] = [];
    for (;;) {
      const polled = await call(
        team,
        "GET",
        `/templates/${templateID}/builds/${buildID}/status?logsOffset=${logs.length}`,
      );
      const info = polled.body as {
        status: string;
        reason?: unknown;
        logEntries: Array<{ message: string }>;
      };
      logs.push(...info.logEntries.map((e) => e.message));
      if ((info.status === "ready" || info.status === "error") && info.logEntries.length === 0) {
        return { status: info.status, reason: info.reason, logs, templateID };
      }
      await new Promise((r) => setTimeout(r, 500));
    }
  }

  /** A gzip tar of `files` (paths relative to a context dir), as the SDK uploads a COPY's files. */
  async function tarOf(files: Record<string, string>): Promise<Buffer> {
    const dir = await mkdtemp(path.join(work, "ctx-"));
    for (const [name, content] of Object.entries(files)) {
      await mkdir(path.dirname(path.join(dir, name)), { recursive: true });
      await writeFile(path.join(dir, name), content);
    }
    const file = path.join(dir, "..", `${path.basename(dir)}.tar.gz`);
    await tar.c({ gzip: true, cwd: dir, file, noDirRecurse: true }, ["app", ...Object.keys(files)]);
    return readFile(file);
  }

  async function read(team: Team, template: string, command: string): Promise<string> {
    const sbx = await Sandbox.create(template, opts(team));
    sandboxes.push(sbx);
    const out = (await sbx.commands.run(command)).stdout;
    await sbx.kill();
    return out;
  }

  before(async () => {
    moat = await startMoat();
    work = await mkdtemp(path.join(tmpdir(), "moat-test-hostile-templates-"));
    teamA = { teamID: "", apiKey: moat.env.E2B_API_KEY! };
    const res = await fetch(`${moat.env.E2B_API_URL}/admin/teams`, {
      method: "POST",
      headers: { "x-admin-token": moat.env.MOAT_ADMIN_TOKEN!, "content-type": "application/json" },
      body: JSON.stringify({ name: "team-b" }),
    });
    assert.equal(res.status, 201);
    teamB = (await res.json()) as Team;
  });

  after(async () => {
    await Promise.allSettled(sandboxes.map((s) => s.kill()));
    await moat?.cleanup();
    await rm(work, { recursive: true, force: true });
  });

  test("team B uploads crafted files under the hash of team A's files and builds first: A's build gets A's files", async () => {
    const contextA = path.join(work, "context-a");
    await mkdir(path.join(contextA, "app"), { recursive: true });
    await writeFile(path.join(contextA, "app", "config.txt"), "team A's own config\n");
    const templateA = () =>
      Template({ fileContextPath: contextA }).fromBaseImage().copy("app", "/home/user/app");
    // What A's SDK will send (its files hash included): B can compute it from A's public repository.
    const serialized = JSON.parse(await Template.toJSON(templateA())) as {
      steps: Array<{ filesHash?: string }>;
    };
    const hashA = serialized.steps.find((s) => s.filesHash)!.filesHash!;
    const crafted = await tarOf({ "app/config.txt": "PLANTED by team B\n" });

    const planted = await buildRaw(teamB, "app", serialized, new Map([[hashA, crafted]]));
    assert.equal(planted.status, "ready", JSON.stringify(planted.reason));
    assert.equal(
      await read(teamB, "app", "cat /home/user/app/config.txt"),
      "PLANTED by team B\n",
      "B's build has B's files",
    );

    const logs: string[] = [];
    await Template.build(templateA(), "app", {
      ...opts(teamA),
      cpuCount: 1,
      memoryMB: 512,
      onBuildLogs: (entry) => logs.push(entry.message),
    });
    assert.ok(
      logs.some((m) => m.includes("Uploaded 'app'")),
      "A's upload was not skipped: B's file is not A's",
    );
    assert.ok(
      !logs.some((m) => m.startsWith("CACHED [1]")),
      `A's COPY is not served from B's layer:\n${logs.join("\n")}`,
    );
    assert.equal(await read(teamA, "app", "cat /home/user/app/config.txt"), "team A's own config\n");
  });

  test("a RUN step or a start command that generates a secret gives each team its own", async () => {
    const secretFrom = () =>
      Template()
        .fromBaseImage()
        .runCmd("head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \\n' > /home/user/build-secret");
    const bootFrom = () =>
      Template()
        .fromBaseImage()
        .setStartCmd(
          "sh -c 'head -c 16 /dev/urandom | od -An -tx1 | tr -d \" \\n\" > /tmp/.boot; mv /tmp/.boot /tmp/boot-secret; exec sleep infinity'",
          waitForFile("/tmp/boot-secret"),
        );
    const secrets = new Map<string, string[]>();
    for (const team of [teamA, teamB]) {
      const logs: string[] = [];
      const onBuildLogs = (entry: { message: string }) => logs.push(entry.message);
      await Template.build(secretFrom(), "run-secret", {
        ...opts(team),
        cpuCount: 1,
        memoryMB: 512,
        onBuildLogs,
      });
      await Template.build(bootFrom(), "boot-secret", {
        ...opts(team),
        cpuCount: 1,
        memoryMB: 512,
        onBuildLogs,
      });
      assert.ok(
        !logs.some((m) => m.startsWith("CACHED")),
        `nothing of another team's build is reused:\n${logs.join("\n")}`,
      );
      secrets.set(team.apiKey, [
        await read(team, "run-secret", "cat /home/user/build-secret"),
        await read(team, "boot-secret", "cat /tmp/boot-secret"),
      ]);
    }
    const [a, b] = [secrets.get(teamA.apiKey)!, secrets.get(teamB.apiKey)!];
    for (const s of [...a, ...b]) assert.match(s, /^[0-9a-f]{32}$/);
    assert.notEqual(a[0], b[0], "the RUN step ran for each team");
    assert.notEqual(a[1], b[1], "the start command ran for each team: no shared snapshot");

    // Within one team the cache still holds: a rebuild boots nothing.
    const logs: string[] = [];
    await Template.build(secretFrom(), "run-secret", {
      ...opts(teamA),
      cpuCount: 1,
      memoryMB: 512,
      onBuildLogs: (entry) => logs.push(entry.message),
    });
    assert.ok(
      logs.some((m) => m.startsWith("CACHED [1]")),
      logs.join("\n"),
    );
    assert.ok(
      logs.some((m) => m.startsWith("CACHED snapshot")),
      logs.join("\n"),
    );
    assert.equal(await read(teamA, "run-secret", "cat /home/user/build-secret"), a[0]);
  });

  test("a file changed on the API's disk after its upload is refused by the node, not built", async () => {
    const bytes = await tarOf({ "app/x.txt": "as uploaded\n" });
    const claim = "ab".repeat(32);
    const serialized = {
      fromImage: "e2bdev/base",
      steps: [{ type: "COPY", args: ["app", "/home/user/app"], filesHash: claim, force: false }],
      force: false,
    };
    // Upload as B, then change the stored file before the build downloads it.
    const requested = await call(teamB, "POST", "/v3/templates", {
      name: "tampered",
      cpuCount: 1,
      memoryMB: 512,
    });
    const { templateID, buildID } = requested.body as { templateID: string; buildID: string };
    const link = await call(teamB, "GET", `/templates/${templateID}/files/${claim}`);
    assert.equal((await fetch(link.body.url as string, { method: "PUT", body: bytes })).status, 200);
    const stored = path.join(moat.dataDir, "template-files", teamB.teamID, claim);
    await writeFile(stored, await tarOf({ "app/x.txt": "swapped afterwards\n" }));
    const started = await call(teamB, "POST", `/v2/templates/${templateID}/builds/${buildID}`, serialized);
    assert.equal(started.status, 202);
    let info: { status: string; reason?: { message: string; step?: string } } = { status: "building" };
    while (info.status !== "ready" && info.status !== "error") {
      await new Promise((r) => setTimeout(r, 500));
      info = (await call(teamB, "GET", `/templates/${templateID}/builds/${buildID}/status`))
        .body as typeof info;
    }
    assert.equal(info.status, "error");
    assert.equal(info.reason?.step, "1");
    assert.match(info.reason?.message ?? "", /SHA-256 is [0-9a-f]{64}, not [0-9a-f]{64} as uploaded/);
  });

  test("Template.exists: the team's own and public templates exist; another team's private one does not", async () => {
    assert.equal(await Template.exists("app", opts(teamA)), true);
    assert.equal(await Template.exists("base", opts(teamB)), true);
    assert.equal(
      await Template.exists("default/app", opts(teamB)),
      false,
      "A's private template reads as missing",
    );
    assert.equal(await Template.exists("default/no-such-template", opts(teamB)), false);
    const { templateID } = (await call(teamA, "GET", "/templates/aliases/app")).body as {
      templateID: string;
    };
    assert.equal((await call(teamB, "GET", `/templates/aliases/${templateID}`)).status, 404, "nor by its id");
    assert.equal((await call(teamA, "PATCH", `/v2/templates/${templateID}`, { public: true })).status, 200);
    assert.equal(await Template.exists("default/app", opts(teamB)), true, "public: visible to every team");
  });
});
