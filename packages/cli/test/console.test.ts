/**
 * moat's console: the log format (pretty on a terminal, JSON otherwise or when asked), `moat
 * --version`, errors without stack traces, setup progress, and the systemd unit of `moat up`.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { chmodSync, cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, describe, test } from "node:test";
import { logFormat } from "@moat/shared";
import { describeError } from "../src/console/errors.js";
import { StatusLine } from "../src/console/status-line.js";
import { systemdQuote, unitArgs, upUnit } from "../src/console/systemd-unit.js";
import { versionText } from "../src/console/version.js";

const root = path.resolve(import.meta.dirname, "../../..");
const main = path.join(root, "packages/cli/src/main.ts");
const sharedIndex = path.join(root, "packages/shared/src/index.ts");

/** Runs TypeScript under tsx with `env`; its stdout and stderr. */
function run(args: string[], env: Record<string, string> = {}) {
  const out = spawnSync(process.execPath, ["--import", "tsx", ...args], {
    encoding: "utf8",
    env: { ...process.env, NO_COLOR: "1", ...env },
    timeout: 30_000,
  });
  return { status: out.status, stdout: out.stdout, stderr: out.stderr };
}

/** A script writing a few log lines the way every component does. */
const LOGGING = `
import { createLogger } from ${JSON.stringify(sharedIndex)};
const log = createLogger("orchestrator");
log.info({ sandboxID: "sbx1", totalMs: 12, note: "two words" }, "sandbox created");
const err = Object.assign(new Error("listen EADDRINUSE: address already in use 127.0.0.1:3000"), { code: "EADDRINUSE" });
log.error({ err }, "could not listen");
`;

describe("log format", () => {
  test("MOAT_LOG_FORMAT wins; otherwise pretty on a terminal and JSON elsewhere", () => {
    assert.equal(logFormat({}, true), "pretty");
    assert.equal(logFormat({}, false), "json");
    assert.equal(logFormat({ MOAT_LOG_FORMAT: "json" }, true), "json");
    assert.equal(logFormat({ MOAT_LOG_FORMAT: "pretty" }, false), "pretty");
    assert.equal(logFormat({ MOAT_LOG_FORMAT: "bogus" }, false), "json");
  });

  test("JSON: one object per line, `component` once, the error's stack kept for machines", () => {
    const { stderr } = run(["--input-type=module", "-e", LOGGING], { MOAT_LOG_FORMAT: "json" });
    const lines = stderr.trim().split("\n");
    assert.equal(lines.length, 2, stderr);
    for (const line of lines) assert.equal(line.match(/"component":/g)?.length, 1, line);
    const [created, failed] = lines.map((l) => JSON.parse(l));
    assert.equal(created.component, "orchestrator");
    assert.equal(created.sandboxID, "sbx1");
    assert.match(failed.err.stack, /at /);
  });

  test("pretty: one line per entry with its component, fields as key=value, an error's message without its stack", () => {
    const { stderr } = run(["--input-type=module", "-e", LOGGING], { MOAT_LOG_FORMAT: "pretty" });
    const lines = stderr.trim().split("\n");
    assert.equal(lines.length, 2, stderr);
    assert.match(
      lines[0]!,
      /^\[\d\d:\d\d:\d\d\] INFO: orchestrator sandbox created sandboxID=sbx1 totalMs=12 note="two words"$/,
    );
    assert.match(
      lines[1]!,
      /^\[\d\d:\d\d:\d\d\] ERROR: orchestrator could not listen listen EADDRINUSE: address already in use 127\.0\.0\.1:3000$/,
    );
    assert.doesNotMatch(stderr, /\bat \S+ \(|\{|"level"/);
  });

  test("--log-format and MOAT_LOG_FORMAT take pretty or json, and name the key otherwise", () => {
    const flag = run([main, "doctor", "--log-format", "xml"]);
    assert.equal(flag.status, 1);
    assert.match(
      flag.stderr,
      /--log-format <format>' argument 'xml' is invalid\. Allowed choices are pretty, json/,
    );
    const env = run([main, "doctor"], { MOAT_LOG_FORMAT: "text" });
    assert.equal(env.status, 1);
    assert.match(
      env.stderr,
      /value 'text' from env 'MOAT_LOG_FORMAT' is invalid\. Allowed choices are pretty, json/,
    );
  });
});

describe("moat --version", () => {
  test("-V and --version print the package's version and the git commit of a checkout", () => {
    const version = JSON.parse(readFileSync(path.join(root, "packages/cli/package.json"), "utf8")).version;
    const expected = new RegExp(
      `^moat ${version.replaceAll(".", "\\.")}( \\(git [0-9a-f]{12}(-dirty)?\\))?$`,
    );
    assert.match(versionText(), expected);
    for (const flag of ["--version", "-V"]) {
      const out = run([main, flag]);
      assert.equal(out.status, 0, out.stderr);
      assert.match(out.stdout.trim(), expected);
    }
    // This test runs in a git checkout: the commit is there.
    assert.match(versionText(), /\(git [0-9a-f]{12}/);
  });
});

describe("errors", () => {
  test("a bad setting ends the command with one line naming it, no stack trace", () => {
    const out = run([main, "up", "--print-systemd-unit", "--api-port", "70000"]);
    assert.equal(out.status, 1);
    assert.match(out.stderr, /--api-port/);
    assert.doesNotMatch(out.stderr, /\n\s+at /);
  });

  test("a port in use says which; an unexpected error its message", () => {
    const inUse = Object.assign(new Error("listen EADDRINUSE: address already in use 127.0.0.1:3000"), {
      code: "EADDRINUSE",
    });
    assert.match(describeError(inUse), /127\.0\.0\.1:3000: another program \(another moat\?\) listens there/);
    assert.equal(describeError(new Error("disk full")), "disk full");
  });
});

describe("setup progress", () => {
  /** A fake stderr: what was written, and whether it is a terminal. */
  function fakeStream(isTTY: boolean) {
    const chunks: string[] = [];
    const stream = {
      isTTY,
      columns: 40,
      write: (s: string) => chunks.push(s),
    } as unknown as NodeJS.WriteStream;
    return { stream, text: () => chunks.join("") };
  }
  const debootstrap = [
    "I: Retrieving InRelease",
    ...Array.from({ length: 50 }, (_, i) => `I: Retrieving pkg${i} 1.${i}-1`),
    ...Array.from({ length: 50 }, (_, i) => `I: Unpacking pkg${i}...`),
    "I: Base system installed successfully.",
  ];

  test("on a terminal debootstrap's lines rewrite one status line, which the outcome replaces", () => {
    const { stream, text } = fakeStream(true);
    const status = new StatusLine(stream, "moat: ");
    for (const message of debootstrap) status.template({ phase: "debootstrap", message }, "[debootstrap] ");
    status.done();
    status.line("base template built");
    const visible = text()
      .split("\n")
      .map((l) => l.split("\r\x1b[K").at(-1))
      .filter(Boolean);
    assert.deepEqual(visible, ["moat: base template built"]);
    for (const piece of text().split("\r\x1b[K")) assert.ok(piece.replace("\n", "").length < 40, piece);
  });

  test("in a log the per-package lines are counted, the others kept", () => {
    const { stream, text } = fakeStream(false);
    const status = new StatusLine(stream, "moat: ");
    for (const message of debootstrap) status.template({ phase: "debootstrap", message }, "[debootstrap] ");
    status.done();
    assert.deepEqual(text().trim().split("\n"), [
      "moat: [debootstrap] I: Retrieving InRelease",
      "moat: template:   (100 package steps)",
      "moat: [debootstrap] I: Base system installed successfully.",
    ]);
  });
});

describe("moat up's systemd unit", () => {
  const tmp = mkdtempSync(path.join(os.tmpdir(), "moattest-unit-"));
  after(() => rmSync(tmp, { recursive: true, force: true }));

  test("deploy/systemd/moat-up.service is the unit moat up prints with the defaults", () => {
    assert.equal(
      readFileSync(path.join(root, "deploy/systemd/moat-up.service"), "utf8"),
      upUnit({ command: ["/usr/local/bin/moat"], dataDir: "/var/lib/moat", args: [] }),
    );
  });

  test("the flags given, the data directory, a relative config file made absolute; not the print flag", () => {
    assert.deepEqual(
      unitArgs(
        [
          "--api-port",
          "3005",
          "--data-dir",
          "rel",
          "--print-systemd-unit",
          "--config",
          "c.yaml",
          "--data-dir=x",
        ],
        "/etc/moat",
      ),
      ["--api-port", "3005", "--config=/etc/moat/c.yaml"],
    );
    assert.equal(systemdQuote("--domain=a.example"), "--domain=a.example");
    assert.equal(systemdQuote("50%"), "50%%");
    assert.equal(systemdQuote('a "b" $HOME\\'), '"a \\"b\\" $$HOME\\\\"');
    assert.throws(() => systemdQuote("a\nExecStartPre=/bin/evil"), /line break/);
    assert.throws(() => upUnit({ command: ["/usr/local/bin/moat"], dataDir: "rel", args: [] }), /absolute/);
  });

  test("moat up --print-systemd-unit prints a unit running this moat with its flags", () => {
    const out = run([
      main,
      "up",
      "--print-systemd-unit",
      "--data-dir",
      "/srv/moat data",
      "--api-port",
      "3005",
    ]);
    assert.equal(out.status, 0, out.stderr);
    const execStart = out.stdout.split("\n").find((l) => l.startsWith("ExecStart="));
    assert.match(execStart ?? "", / up "--data-dir=\/srv\/moat data" --api-port 3005$/);
    assert.doesNotMatch(out.stdout, /StateDirectory/, "systemd makes state directories only under /var/lib");
  });

  test("systemd-analyze verify: a printed unit with an unusual data directory and flags, no error, no warning", () => {
    // As in deploy-systemd.test.ts: a root with the host's units, moat where ExecStart says.
    mkdirSync(path.join(tmp, "usr/lib/systemd"), { recursive: true });
    cpSync("/lib/systemd/system", path.join(tmp, "usr/lib/systemd/system"), {
      recursive: true,
      verbatimSymlinks: true,
    });
    mkdirSync(path.join(tmp, "usr/local/bin"), { recursive: true });
    writeFileSync(path.join(tmp, "usr/local/bin/moat"), "#!/bin/sh\n");
    chmodSync(path.join(tmp, "usr/local/bin/moat"), 0o755);
    mkdirSync(path.join(tmp, "etc/systemd/system"), { recursive: true });
    for (const [name, dataDir] of [
      ["moat-up.service", "/var/lib/moat"],
      ["moat-odd.service", "/srv/moat 100% $data"],
    ] as const) {
      const unit = upUnit({
        command: ["/usr/local/bin/moat"],
        dataDir,
        args: [
          "--api-port",
          "3005",
          "--domain=sandboxes.example.com",
          "--egress-allow",
          "10.0.0.0/8,10.1.2.3:53",
        ],
      });
      writeFileSync(path.join(tmp, "etc/systemd/system", name), unit);
    }
    const out = spawnSync(
      "systemd-analyze",
      [
        "verify",
        `--root=${tmp}`,
        "--man=no",
        path.join(tmp, "etc/systemd/system/moat-up.service"),
        path.join(tmp, "etc/systemd/system/moat-odd.service"),
      ],
      { encoding: "utf8" },
    );
    assert.equal(out.error, undefined, "systemd-analyze is missing: apt-get install systemd");
    assert.equal(out.status, 0, out.stderr);
    assert.equal(out.stderr.trim(), "");
  });
});
