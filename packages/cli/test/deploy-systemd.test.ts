/**
 * deploy/systemd: the units pass `systemd-analyze verify` (any warning counts: unknown keys and bad
 * values are only warnings to systemd, and are ignored when the unit runs) in a temporary root that
 * has the host's system units, moat at /usr/local/bin/moat and /etc/moat/moat.env; each runs its
 * component with flags and variables that component has; API and proxy run unprivileged.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import {
  chmodSync,
  cpSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { SECRETS, surfaceProblems } from "./deploy-surface.js";

const dir = path.resolve(import.meta.dirname, "../../../deploy/systemd");
const UNITS = ["moat-api.service", "moat-orchestrator.service", "moat-proxy.service", "moat-up.service"];

/** `Key=value` lines of a unit's section, in order. */
function section(unit: string, name: string): Array<[string, string]> {
  const text = readFileSync(path.join(dir, unit), "utf8");
  const body = text.split(/^\[/m).find((s) => s.startsWith(`${name}]`)) ?? "";
  return body
    .split("\n")
    .slice(1)
    .filter((l) => /^[A-Za-z]+=/.test(l))
    .map((l) => [l.slice(0, l.indexOf("=")), l.slice(l.indexOf("=") + 1)]);
}

describe("deploy/systemd", () => {
  let root: string;

  before(() => {
    root = mkdtempSync(path.join(os.tmpdir(), "moattest-systemd-"));
    // systemd-analyze --root resolves everything inside root: the units these depend on, the
    // ExecStart binary (it must be executable) and the EnvironmentFile.
    mkdirSync(path.join(root, "usr/lib/systemd"), { recursive: true });
    cpSync("/lib/systemd/system", path.join(root, "usr/lib/systemd/system"), {
      recursive: true,
      verbatimSymlinks: true,
    });
    mkdirSync(path.join(root, "usr/local/bin"), { recursive: true });
    writeFileSync(path.join(root, "usr/local/bin/moat"), "#!/bin/sh\n");
    chmodSync(path.join(root, "usr/local/bin/moat"), 0o755);
    mkdirSync(path.join(root, "etc/moat"), { recursive: true });
    cpSync(path.join(dir, "moat.env.example"), path.join(root, "etc/moat/moat.env"));
    mkdirSync(path.join(root, "etc/systemd/system"), { recursive: true });
    for (const unit of UNITS) cpSync(path.join(dir, unit), path.join(root, "etc/systemd/system", unit));
  });

  after(() => {
    if (root) rmSync(root, { recursive: true, force: true });
  });

  test("the four units, and nothing else but the environment file's example", () => {
    assert.deepEqual(readdirSync(dir).sort(), [...UNITS, "moat.env.example"].sort());
  });

  test("systemd-analyze verify: no error, no warning", () => {
    const out = spawnSync(
      "systemd-analyze",
      ["verify", `--root=${root}`, "--man=no", ...UNITS.map((u) => path.join(root, "etc/systemd/system", u))],
      { encoding: "utf8" },
    );
    assert.equal(out.error, undefined, "systemd-analyze is missing: apt-get install systemd");
    assert.equal(out.status, 0, out.stderr);
    assert.equal(out.stderr.trim(), "");
  });

  test("each unit runs its component with its command's flags and variables", () => {
    const env = readFileSync(path.join(dir, "moat.env.example"), "utf8")
      .split("\n")
      .filter((l) => /^[A-Z]/.test(l))
      .map((l) => l.slice(0, l.indexOf("=")));
    for (const unit of UNITS) {
      const service = section(unit, "Service");
      const execStart = service.find(([k]) => k === "ExecStart")?.[1] ?? "";
      const [binary, ...args] = execStart.split(/\s+/);
      assert.equal(binary, "/usr/local/bin/moat");
      assert.equal(args[0], unit.replace(/^moat-|\.service$/g, ""));
      // The shared environment file holds every component's settings: check the names this
      // unit's command line uses, and that every name there is some component's.
      const used = env.filter((name) => execStart.includes(`\${${name}}`));
      assert.deepEqual(surfaceProblems(unit, args, used), []);
      for (const [key, value] of service) {
        if (key === "Environment")
          for (const secret of SECRETS)
            assert.ok(!value.includes(`${secret}=`), `${unit}: ${secret} belongs in /etc/moat/moat.env`);
      }
    }
    const everyone = ["orchestrator", "api", "proxy"].flatMap((c) => surfaceProblems("moat.env", [c], env));
    const unknown = env.filter((name) => everyone.filter((p) => p.endsWith(` ${name}`)).length === 3);
    assert.deepEqual(unknown, [], "variables no component reads");
  });

  test("API and proxy run as a dynamic user without privileges; the orchestrator keeps its sandboxes on stop", () => {
    for (const unit of ["moat-api.service", "moat-proxy.service"]) {
      const service = Object.fromEntries(section(unit, "Service"));
      assert.equal(service.DynamicUser, "yes", unit);
      assert.equal(service.NoNewPrivileges, "yes", unit);
      assert.equal(service.CapabilityBoundingSet, "", unit);
    }
    const orchestrator = Object.fromEntries(section("moat-orchestrator.service", "Service"));
    assert.equal(
      orchestrator.KillMode,
      "process",
      "stopping the node agent must not kill the sandboxes it adopts",
    );
  });
});
