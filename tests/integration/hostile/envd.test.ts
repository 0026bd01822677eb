/**
 * Hostile tenants and host users against envd (issue 11, holes 6 and 9), with `moat up` and the
 * unmodified SDK: direct calls as root on the host to a secured sandbox's host address (which the
 * sandbox record reveals) without its access token, and a tenant's `user` trying to reach root's
 * files through envd's REST routes, by path, by symlink and by a signed URL. (In moat's sandboxes
 * envd never sets the clock, gVisor's follows the host's; that /init only moves it forward is a
 * unit test.)
 */
import assert from "node:assert/strict";
import { readdir, readFile } from "node:fs/promises";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { Slot } from "@moat/orchestrator";
import { ENVD_PORT } from "@moat/shared";
import { Sandbox, SandboxError } from "e2b";
import { type RunningMoat, startMoat, useMoat } from "../helpers/moat-up.js";

/** Where the host reaches a sandbox's envd, and its access token, from the node's sandbox record. */
async function envdOf(moat: RunningMoat, sandboxID: string): Promise<{ url: string; token: string }> {
  const root = path.join(moat.dataDir, "sandboxes");
  for (const name of await readdir(root)) {
    const text = await readFile(path.join(root, name, "sandbox.json"), "utf8").catch(() => undefined);
    const record = text
      ? (JSON.parse(text) as { sandboxID: string; slotIndex: number; envdAccessToken: string })
      : undefined;
    if (record?.sandboxID === sandboxID) {
      return {
        url: `http://${new Slot(record.slotIndex).hostAddress}:${ENVD_PORT}`,
        token: record.envdAccessToken,
      };
    }
  }
  throw new Error(`no record of sandbox ${sandboxID}`);
}

const basic = (name: string) => ({ authorization: `Basic ${Buffer.from(`${name}:`).toString("base64")}` });

async function expectStatus(res: Response, status: number): Promise<string> {
  const text = await res.text();
  assert.equal(res.status, status, text);
  if (status >= 400) {
    const body = JSON.parse(text) as { code: number; message: string };
    assert.equal(body.code, status);
    return body.message;
  }
  return text;
}

/** A 403 from envd's REST routes, as the SDK reports it. */
function permissionDenied(err: unknown): boolean {
  return err instanceof SandboxError && /403/.test(err.message) && /permission denied/.test(err.message);
}

describe("hostile: envd's control routes and file routes", { timeout: 600_000 }, () => {
  let moat: RunningMoat;
  let sbx: Sandbox;
  let envd: { url: string; token: string };

  before(async () => {
    moat = await startMoat();
    useMoat(moat);
    sbx = await Sandbox.create("base", { timeoutMs: 600_000 });
    envd = await envdOf(moat, sbx.sandboxId);
    assert.ok(envd.token, "SDK sandboxes are secured");
  });

  after(async () => {
    await moat?.cleanup();
  });

  test("/init without the token, or with a wrong one, is 401 and changes nothing", async () => {
    const attacks = [
      {
        envVars: { INJECTED: "pwned", BASH_FUNC_whoami: "() { echo root; }" },
        defaultUser: "root",
        defaultWorkdir: "/tmp",
        timestamp: "2001-01-01T00:00:00Z",
      },
      // A token of the attacker's, as if the sandbox had none yet.
      { accessToken: "attacker-token", envVars: { INJECTED: "pwned" }, defaultUser: "root" },
    ];
    for (const headers of [{}, { "x-access-token": "wrong" }, { "x-access-token": "" }]) {
      for (const body of attacks) {
        const res = await fetch(`${envd.url}/init`, {
          method: "POST",
          headers: { "content-type": "application/json", ...headers },
          body: JSON.stringify(body),
        });
        await expectStatus(res, 401);
      }
    }
    const out = await sbx.commands.run('echo "[$INJECTED]"; whoami; pwd; date +%Y');
    assert.equal(out.stdout, `[]\nuser\n/home/user\n${new Date().getUTCFullYear()}\n`);
    // The attacker's token opens nothing; the sandbox's own still does.
    await expectStatus(
      await fetch(`${envd.url}/envs`, { headers: { "x-access-token": "attacker-token" } }),
      401,
    );
    const envs = JSON.parse(
      await expectStatus(await fetch(`${envd.url}/envs`, { headers: { "x-access-token": envd.token } }), 200),
    ) as Record<string, string>;
    assert.equal(envs.INJECTED, undefined);
    assert.equal(envs.E2B_SANDBOX_ID, sbx.sandboxId);
  });

  test("/freeze without the token is 401 and cuts no connection", async () => {
    // A command whose output stream spans the attempts: a freeze would reset it.
    const running = await sbx.commands.run("sleep 2; echo survived", { background: true });
    for (const headers of [{}, { "x-access-token": "wrong" }]) {
      await expectStatus(await fetch(`${envd.url}/freeze`, { method: "POST", headers }), 401);
    }
    assert.equal((await running.wait()).stdout, "survived\n");
  });

  test("/envs, /metrics and RPCs need the token", async () => {
    for (const route of ["/envs", "/metrics"]) {
      await expectStatus(await fetch(`${envd.url}${route}`), 401);
      await expectStatus(await fetch(`${envd.url}${route}`, { headers: { "x-access-token": "wrong" } }), 401);
      await expectStatus(
        await fetch(`${envd.url}${route}`, { headers: { "x-access-token": envd.token } }),
        200,
      );
    }
    const rpc = await fetch(`${envd.url}/process.Process/List`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: "{}",
    });
    assert.equal(rpc.status, 401);
    await rpc.arrayBuffer();
  });

  test("/files as `user` cannot read /etc/shadow or write /etc/passwd, by path or by symlink", async () => {
    const passwd = (await sbx.commands.run("cat /etc/passwd")).stdout;
    await assert.rejects(sbx.files.read("/etc/shadow"), permissionDenied);
    await assert.rejects(sbx.files.write("/etc/passwd", "user::0:0::/root:/bin/bash\n"), permissionDenied);
    await assert.rejects(sbx.files.write("/etc/moat-planted", "x"), permissionDenied);
    await sbx.commands.run("ln -sfn /etc/shadow ~/shadow-link && ln -sfn /etc ~/etc-link");
    await assert.rejects(sbx.files.read("/home/user/shadow-link"), permissionDenied);
    await assert.rejects(sbx.files.read("/home/user/etc-link/shadow"), permissionDenied);
    await assert.rejects(
      sbx.files.write("/home/user/etc-link/passwd", "user::0:0::/root:/bin/bash\n"),
      permissionDenied,
    );
    await assert.rejects(
      sbx.files.write("/home/user/etc-link/cron.d/moat", "* * * * * root id\n"),
      permissionDenied,
    );
    // Uploads write in place: a hard link of the user's to root's file (when gVisor lets them make
    // one) is checked on the file it leads to.
    await sbx.commands.run("ln /etc/passwd ~/passwd-hardlink 2>/dev/null || true");
    if ((await sbx.commands.run("test -e ~/passwd-hardlink && echo yes || true")).stdout === "yes\n") {
      await assert.rejects(
        sbx.files.write("/home/user/passwd-hardlink", "user::0:0::/root:/bin/bash\n"),
        permissionDenied,
      );
    }
    // Directly at the host address with the token, as `user` by Basic auth: the same.
    const asUser = { "x-access-token": envd.token, ...basic("user") };
    await expectStatus(await fetch(`${envd.url}/files?path=/etc/shadow`, { headers: asUser }), 403);
    const overwrite = await fetch(`${envd.url}/files?path=/etc/passwd`, {
      method: "POST",
      headers: { ...asUser, "content-type": "application/octet-stream" },
      body: "user::0:0::/root:/bin/bash\n",
    });
    await expectStatus(overwrite, 403);
    assert.equal((await sbx.commands.run("cat /etc/passwd")).stdout, passwd);
    assert.equal(
      (await sbx.commands.run("ls /etc/moat-planted /etc/cron.d/moat 2>&1 || true")).stdout.includes(
        "No such file",
      ),
      true,
    );
    // Root may.
    assert.match(await sbx.files.read("/etc/shadow", { user: "root" }), /^root:/);
    // Files the user creates are theirs.
    await sbx.files.write("/home/user/new-dir/mine.txt", "mine");
    assert.equal(
      (await sbx.commands.run("stat -c %U /home/user/new-dir /home/user/new-dir/mine.txt")).stdout,
      "user\nuser\n",
    );
  });

  test("a signed URL acts as the user it was signed for, whatever Basic header comes with it", async () => {
    const relative = async (url: string) => {
      const u = new URL(url);
      return `${envd.url}${u.pathname}${u.search}`;
    };
    // Signed for `user` (and for the default user, which is `user`): Basic root does not make it root.
    for (const user of ["user", undefined]) {
      const url = await relative(await sbx.downloadUrl("/etc/shadow", user ? { user } : {}));
      assert.match(url, /signature=/);
      await expectStatus(await fetch(url, { headers: basic("root") }), 403);
    }
    const upload = await relative(await sbx.uploadUrl("/home/user/signed.txt"));
    const form = new FormData();
    form.append("file", new Blob(["signed upload"]), "signed.txt");
    await expectStatus(await fetch(upload, { method: "POST", body: form, headers: basic("root") }), 200);
    assert.equal((await sbx.commands.run("stat -c %U /home/user/signed.txt")).stdout, "user\n");
    // Signed for root: root it is, whatever Basic says.
    const asRoot = await relative(await sbx.downloadUrl("/etc/shadow", { user: "root" }));
    assert.match(await expectStatus(await fetch(asRoot, { headers: basic("user") }), 200), /^root:/);
  });
});
