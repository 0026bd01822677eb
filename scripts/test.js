#!/usr/bin/env node
// Runs test files with Node's test runner: every file (unit tests in packages/*/test, integration
// tests in tests/), or with `--unit` only the root-free unit tests; other arguments filter by path.
// Unit test files run side by side; integration files one at a time (the envd integration tests
// share port 49983, where the e2b SDK's debug mode expects envd), holding a host-wide lock, since
// one orchestrator per host owns the sandbox networks: a second run waits instead of failing.
import { spawnSync } from "node:child_process";
import { readdirSync, statSync } from "node:fs";
import path from "node:path";

const root = path.resolve(import.meta.dirname, "..");
const args = process.argv.slice(2);
const unitOnly = args.includes("--unit");
const filters = args.filter((a) => a !== "--unit");
const LOCK = "/tmp/moat-integration-tests.lock";
// Unit tests share nothing (in-memory databases, ports chosen by the OS): one file per core.
const CONCURRENCY = Math.max(2, (await import("node:os")).availableParallelism());

function collect(dir, out) {
  let names;
  try {
    names = readdirSync(dir);
  } catch {
    return out;
  }
  for (const name of names) {
    if (name === "node_modules" || name === "dist") continue;
    const full = path.join(dir, name);
    if (statSync(full).isDirectory()) collect(full, out);
    else if (name.endsWith(".test.ts")) out.push(path.relative(root, full));
  }
  return out;
}

const files = [
  ...collect(path.join(root, "packages"), []),
  ...(unitOnly ? [] : collect(path.join(root, "tests"), [])),
]
  .filter((f) => filters.length === 0 || filters.some((x) => f.includes(x)))
  .sort();
if (files.length === 0) {
  console.error("no test files matched");
  process.exit(1);
}

// The slowest unit test files (by CPU time) start first, so the lanes end together instead of one
// finishing a long file alone; the others follow in path order.
const SLOWEST_FIRST = [
  "packages/api/test/template-restart.test.ts",
  "packages/api/test/restart.test.ts",
  "packages/api/test/template-cli.test.ts",
  "packages/api/test/quotas.test.ts",
  "packages/api/test/template-sandboxes.test.ts",
  "packages/api/test/pause.test.ts",
  "packages/api/test/fuzz.test.ts",
  "packages/api/test/template-sdk.test.ts",
  "packages/api/test/sandboxes.test.ts",
  "packages/api/test/template-builds.test.ts",
  "packages/api/test/template-management.test.ts",
  "packages/api/test/template-retire.test.ts",
];
const rank = (f) => {
  const i = SLOWEST_FIRST.indexOf(f);
  return i < 0 ? SLOWEST_FIRST.length : i;
};
const unitFiles = files.filter((f) => f.startsWith("packages/")).sort((a, b) => rank(a) - rank(b));
const integrationFiles = files.filter((f) => f.startsWith("tests/"));

/** Node's test runner over `group`, `concurrency` files at a time; its exit status. */
function run(group, concurrency, lock, nodeFlags = []) {
  if (group.length === 0) return 0;
  const argv = [
    process.execPath,
    ...nodeFlags,
    "--import",
    "tsx",
    "--test",
    `--test-concurrency=${concurrency}`,
    "--test-reporter=spec",
    ...group,
  ];
  if (lock && process.env.MOAT_TEST_LOCK_HELD !== "1") {
    if (spawnSync("flock", ["-n", LOCK, "true"]).status !== 0) {
      console.error(`waiting for another integration test run on this host to finish (lock ${LOCK})`);
    }
    argv.unshift("flock", LOCK);
  }
  const result = spawnSync(argv[0], argv.slice(1), {
    cwd: root,
    stdio: "inherit",
    env: { ...process.env, MOAT_TEST_LOCK_HELD: "1" },
  });
  return result.status ?? 1;
}

// Unit tests first, side by side; then the integration tests, one file at a time under the lock.
// Unit test processes are short: V8's optimizing compile of PGlite's WebAssembly costs them more
// CPU than it saves (the test runner hands the flag to each file's process).
const unitStatus = run(unitFiles, CONCURRENCY, false, ["--liftoff-only"]);
const integrationStatus = run(integrationFiles, 1, true);
process.exit(unitStatus || integrationStatus);
