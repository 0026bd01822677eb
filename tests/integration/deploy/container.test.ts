/**
 * The container image (deploy/container/Containerfile), built and run with podman as an operator
 * would: `deploy/container/build.sh` over this built checkout (the Debian 12 base is made once with
 * debootstrap and kept as localhost/moat-base:bookworm-<hash>, the only image this test leaves, so
 * a second run skips the minute of debootstrap), then every component's `--help`, `moat doctor` in a
 * privileged host-network container as the orchestrator runs (every host prerequisite present in
 * the image), and `moat api` started in a container as a non-root user with its PGlite data in a
 * volume, answering `GET /health` on the host's loopback. The image built here and its containers are removed after.
 *
 * podman runs with runc, cgroupfs and explicit ulimits: crun refuses this machine's hybrid
 * cgroups and rlimits.
 */
import assert from "node:assert/strict";
import { type SpawnSyncReturns, spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { chown, mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { freePort } from "../helpers/orchestrator.js";

const root = path.resolve(import.meta.dirname, "../../..");
const IMAGE = `localhost/moat-test:${process.pid}`;
const API_CONTAINER = `moattest-api-${process.pid}`;
/** Any unprivileged uid: the API needs no root, so the Kubernetes manifests run it as non-root. */
const API_UID = 65532;
const PODMAN = ["--runtime=runc", "--cgroup-manager=cgroupfs"];
/** Explicit and modest: runc on this machine refuses to set limits it would inherit or raise. */
const RUN = [...PODMAN, "run", "--ulimit", "nofile=4096:4096", "--ulimit", "nproc=4096:4096"];

function podman(args: string[], timeoutMs = 60_000): SpawnSyncReturns<string> {
  return spawnSync("podman", args, { encoding: "utf8", timeout: timeoutMs });
}

function ok(r: SpawnSyncReturns<string>, what: string): string {
  assert.equal(r.status, 0, `${what} failed (${r.status ?? r.signal}):\n${r.stdout}\n${r.stderr}`);
  return r.stdout;
}

/** `sh -c <script>` in a throwaway container with no network (one container: each start costs seconds). */
function inImage(script: string): string {
  return ok(
    podman([...RUN, "--rm", "--network=none", "--entrypoint", "sh", IMAGE, "-c", script]),
    `sh -c ${script}`,
  );
}

describe("container image: built with podman, every component a subcommand", { timeout: 600_000 }, () => {
  let dataDir: string;

  before(async () => {
    const started = performance.now();
    const build = spawnSync("bash", [path.join(root, "deploy/container/build.sh"), IMAGE], {
      cwd: root,
      encoding: "utf8",
      timeout: 480_000,
    });
    ok(build, "deploy/container/build.sh");
    console.log(`image built in ${((performance.now() - started) / 1000).toFixed(1)} s`);
    dataDir = await mkdtemp(path.join(os.tmpdir(), "moattest-api-data-"));
    await chown(dataDir, API_UID, API_UID);
  });

  after(async () => {
    podman(["rm", "-f", "-t", "2", API_CONTAINER]);
    podman(["rmi", "-f", IMAGE]);
    if (dataDir) await rm(dataDir, { recursive: true, force: true });
  });

  test("moat --help lists every component, and each one's --help the flags the deploy files use", () => {
    const out = inImage(
      'for c in "" orchestrator api proxy up; do echo "=== $c"; moat $c --help || echo "FAILED: moat $c --help"; done',
    );
    const help = (command: string) => out.split(`=== ${command}\n`)[1]?.split("\n=== ")[0] ?? "";
    assert.doesNotMatch(out, /FAILED/);
    for (const command of ["up", "orchestrator", "api", "proxy", "setup", "doctor"]) {
      assert.match(help(""), new RegExp(`^\\s+${command}\\b`, "m"), `moat --help has no ${command}`);
    }
    assert.match(help("orchestrator"), /--node-id/);
    assert.match(help("api"), /--database-url/);
    assert.match(help("proxy"), /--redis-url/);
  });

  test("the image holds the checkout's Node (package.json's), the runtime tools and no sources or dev tools", () => {
    const out = inImage(
      [
        "node --version",
        "for t in nft ip mkfs.ext4 zstd bwrap debootstrap losetup; do command -v $t >/dev/null || echo missing $t; done",
        "for p in packages/api/src tests node_modules/typescript node_modules/@biomejs; do test -e /opt/moat/$p && echo present $p; done",
        "true",
      ].join("; "),
    );
    const pkg = JSON.parse(readFileSync(path.join(root, "package.json"), "utf8"));
    const version = pkg.optionalDependencies[`node-linux-${process.arch}`];
    assert.match(out, new RegExp(`^v${version.replaceAll(".", "\\.")}$`, "m"), `node in the image: ${out}`);
    assert.doesNotMatch(out, /missing|present/);
  });

  test("moat doctor in a privileged host-network container: every host prerequisite of the orchestrator", async () => {
    // As the DaemonSet runs it (runsc and the base template come at its first start, not checked).
    const nodeData = await mkdtemp(path.join(os.tmpdir(), "moattest-node-data-"));
    try {
      const r = podman([
        ...RUN,
        "--rm",
        "--privileged",
        "--network=host",
        "-v",
        `${nodeData}:/var/lib/moat`,
        IMAGE,
        "doctor",
      ]);
      const lines = r.stdout.split("\n").filter((l) => /^(ok|warn|FIX) /.test(l));
      const checks = new Map(lines.map((l) => [l.slice(5, l.indexOf(":")), l.slice(0, 4).trim()]));
      for (const name of [
        "root",
        "netns",
        "nftables",
        "cgroups",
        "debootstrap",
        "bubblewrap",
        "sandbox-disks",
      ])
        assert.equal(checks.get(name), "ok", `doctor in the image, ${name}:\n${r.stdout}${r.stderr}`);
    } finally {
      await rm(nodeData, { recursive: true, force: true });
    }
  });

  test("moat api runs as non-root with PGlite in a volume and answers /health on the host", async () => {
    const port = await freePort();
    ok(
      podman([
        ...RUN,
        "-d",
        "--name",
        API_CONTAINER,
        "--network=host",
        "--user",
        `${API_UID}:${API_UID}`,
        "-v",
        `${dataDir}:/var/lib/moat`,
        "-e",
        `MOAT_NODE_TOKEN=${"t".repeat(40)}`,
        IMAGE,
        "api",
        "--host",
        "127.0.0.1",
        "--port",
        String(port),
        "--data-dir",
        "/var/lib/moat",
        // A static node, never called here: /health needs none, and the API wants one unless nodes register.
        "--node",
        "local=http://127.0.0.1:5008",
      ]),
      "podman run moat api",
    );
    const deadline = Date.now() + 60_000;
    let last = "";
    while (Date.now() < deadline) {
      try {
        const res = await fetch(`http://127.0.0.1:${port}/health`);
        if (res.ok) return;
        last = `HTTP ${res.status}`;
      } catch (err) {
        last = String(err);
      }
      const state = podman(["inspect", "-f", "{{.State.Running}}", API_CONTAINER]).stdout.trim();
      if (state === "false") break;
      await sleep(500);
    }
    const logs = podman(["logs", API_CONTAINER]);
    assert.fail(`moat api never answered /health (${last}); its output:\n${logs.stdout}${logs.stderr}`);
  });
});
