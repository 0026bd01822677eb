/**
 * deploy/nomad: each job file parsed with HashiCorp's own HCL parser (@cdktf/hcl2json, offline;
 * `nomad` is not a Debian package) and checked as E2B runs its fleet: the orchestrator a system job
 * on the clients with meta.moat_node = "true" (raw_exec: it needs the host), API and proxy service
 * jobs of two or more; every task runs a moat component with flags and variables that component
 * has, and takes its secrets from Nomad Variables, never from the job file.
 */
import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import { describe, test } from "node:test";
import { parse } from "@cdktf/hcl2json";
import { SECRETS, surfaceProblems } from "./deploy-surface.js";

const dir = path.resolve(import.meta.dirname, "../../../deploy/nomad");

// biome-ignore lint/suspicious/noExplicitAny: hcl2json's JSON of a job file.
type HCL = any;

/** `${name}` as Nomad writes an interpolation (not a JavaScript template). */
const interpolation = (name: string) => `\${${name}}`;

/** hcl2json gives every block as a list; the one of each these files have. */
const one = (blocks: HCL[] | undefined, what: string): HCL => {
  assert.equal(blocks?.length, 1, `expected one ${what}`);
  return blocks?.[0];
};

async function job(file: string): Promise<{ name: string; job: HCL; variables: HCL }> {
  const parsed = await parse(file, readFileSync(path.join(dir, file), "utf8"));
  const names = Object.keys(parsed.job ?? {});
  assert.equal(names.length, 1, `${file}: one job per file`);
  return {
    name: names[0] as string,
    job: one(parsed.job[names[0] as string], "job"),
    variables: parsed.variable ?? {},
  };
}

/** Every task of a job with its group. */
function tasks(j: HCL): Array<{ group: HCL; name: string; task: HCL }> {
  return Object.values(j.group as Record<string, HCL[]>).flatMap((groups) =>
    groups.flatMap((group) =>
      Object.entries(group.task as Record<string, HCL[]>).map(([name, [task]]) => ({ group, name, task })),
    ),
  );
}

/** Variable names a template with env = true sets (`NAME=…` lines). */
function templateEnv(task: HCL): string[] {
  return (task.template ?? [])
    .filter((t: HCL) => t.env)
    .flatMap((t: HCL) =>
      [...(t.data as string).matchAll(/(?:^|\}\}|\s)([A-Z][A-Z0-9_]*)=/gm)].map((m) => m[1] as string),
    );
}

describe("deploy/nomad", () => {
  test("the files are the three jobs, each parsing", async () => {
    const files = readdirSync(dir)
      .filter((f) => f.endsWith(".hcl"))
      .sort();
    assert.deepEqual(files, ["moat-api.nomad.hcl", "moat-orchestrator.nomad.hcl", "moat-proxy.nomad.hcl"]);
    for (const f of files) assert.ok((await job(f)).name);
  });

  test("orchestrator: a system job on the moat clients, raw_exec on the host", async () => {
    const { name, job: j } = await job("moat-orchestrator.nomad.hcl");
    assert.equal(name, "moat-orchestrator");
    assert.equal(j.type, "system");
    assert.ok(
      j.constraint?.some((c: HCL) => c.attribute === interpolation("meta.moat_node") && c.value === "true"),
      "only on clients marked for sandboxes",
    );
    const [{ task }] = tasks(j);
    assert.equal(task.driver, "raw_exec");
    const config = one(task.config, "config");
    assert.equal(config.args[0], "orchestrator");
    const env = one(task.env, "env");
    assert.equal(env.MOAT_NODE_ID, interpolation("node.unique.name"), "each node registers under its own id");
    assert.ok(env.MOAT_NODE_ADDRESS, "each node says where it is reached");
  });

  for (const [file, command] of [
    ["moat-api.nomad.hcl", "api"],
    ["moat-proxy.nomad.hcl", "proxy"],
  ] as const) {
    test(`${command}: a service job of two or more in the moat image, checked by Nomad`, async () => {
      const { name, job: j } = await job(file);
      assert.equal(name, `moat-${command}`);
      assert.equal(j.type, "service");
      const [{ group, task }] = tasks(j);
      assert.ok(group.count >= 2, "one instance is a single point of failure");
      assert.ok(one(group.service, "service").check?.length > 0, "a health check");
      assert.equal(task.driver, "docker");
      const config = one(task.config, "config");
      assert.equal(config.image, interpolation("var.image"));
      assert.equal(config.args[0], command);
      assert.equal(config.privileged ?? false, false, `${command} needs no privileges`);
    });
  }

  test("every task's flags and variables are its command's; secrets only from Nomad Variables", async () => {
    for (const file of readdirSync(dir).filter((f) => f.endsWith(".hcl"))) {
      const { job: j, variables } = await job(file);
      for (const { name, task } of tasks(j)) {
        const config = one(task.config, "config");
        const env = Object.keys(task.env?.[0] ?? {});
        const fromTemplate = templateEnv(task);
        assert.deepEqual(surfaceProblems(`${file} ${name}`, config.args, [...env, ...fromTemplate]), []);
        for (const secret of SECRETS)
          assert.ok(
            !env.includes(secret),
            `${file} ${name}: ${secret} in the job file; use a Nomad Variable`,
          );
        assert.ok(
          fromTemplate.includes("MOAT_NODE_TOKEN"),
          `${file} ${name}: every component needs the node token`,
        );
        // Every ${var.x} a task uses is declared.
        for (const [, v] of JSON.stringify(task).matchAll(/\$\{var\.(\w+)\}/g))
          assert.ok(v && v in variables, `${file}: var.${v} is not declared`);
      }
    }
  });
});
