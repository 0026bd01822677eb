import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, describe, test } from "node:test";
import { HostnameSetter, sethostnameHelper } from "../src/http/hostname.js";

const dir = mkdtempSync(path.join(tmpdir(), "moat-hostname-test-"));
after(() => rmSync(dir, { recursive: true, force: true }));

/** A helper that stores the name it reads in `file` and answers `answer`. */
function fakeHelper(file: string, answer = "ok"): string[] {
  const script = `let s="";process.stdin.on("data",d=>s+=d).on("end",()=>{require("fs").writeFileSync(${JSON.stringify(file)},s);process.stdout.write(${JSON.stringify(`${answer}\n`)})})`;
  return [process.execPath, "-e", script];
}

/** The exec fallback: stores its last argument in `file`. */
function fakeFallback(file: string): string[] {
  const script = `require("fs").writeFileSync(${JSON.stringify(file)}, process.argv.at(-1))`;
  return [process.execPath, "-e", script, "--"];
}

const read = (file: string) => {
  try {
    return readFileSync(file, "utf8");
  } catch {
    return undefined;
  }
};

describe("hostname setter", () => {
  test("an armed helper sets the name; no exec", async () => {
    const helped = path.join(dir, "a-helper");
    const execed = path.join(dir, "a-exec");
    const setter = new HostnameSetter({ helper: fakeHelper(helped), fallback: fakeFallback(execed) });
    setter.arm();
    assert.equal(setter.armed, true);
    await setter.set("sbx-a");
    assert.equal(read(helped), "sbx-a\n");
    assert.equal(read(execed), undefined);
    assert.equal(setter.armed, false, "the helper serves once");
  });

  test("the helper serves once: the next rename execs", async () => {
    const helped = path.join(dir, "b-helper");
    const execed = path.join(dir, "b-exec");
    const setter = new HostnameSetter({ helper: fakeHelper(helped), fallback: fakeFallback(execed) });
    setter.arm();
    await setter.set("sbx-b1");
    await setter.set("sbx-b2");
    assert.equal(read(helped), "sbx-b1\n");
    assert.equal(read(execed), "sbx-b2");
  });

  test("a helper that fails, or cannot start, falls back to the exec", async () => {
    const execed = path.join(dir, "c-exec");
    const failing = new HostnameSetter({
      helper: fakeHelper(path.join(dir, "c-helper"), "failed: EPERM"),
      fallback: fakeFallback(execed),
    });
    failing.arm();
    await failing.set("sbx-c1");
    assert.equal(read(execed), "sbx-c1");

    const missing = new HostnameSetter({
      helper: [path.join(dir, "no-such-perl")],
      fallback: fakeFallback(execed),
    });
    missing.arm();
    await missing.set("sbx-c2");
    assert.equal(read(execed), "sbx-c2");
  });

  test("a dismissed helper exits; the fallback still works", async () => {
    const helped = path.join(dir, "d-helper");
    const execed = path.join(dir, "d-exec");
    const setter = new HostnameSetter({ helper: fakeHelper(helped), fallback: fakeFallback(execed) });
    setter.arm();
    setter.dismiss();
    assert.equal(setter.armed, false);
    // The helper read EOF: it wrote an empty name and ended.
    for (let i = 0; i < 200 && read(helped) === undefined; i++) await new Promise((r) => setTimeout(r, 10));
    assert.equal(read(helped), "");
    await setter.set("sbx-d");
    assert.equal(read(execed), "sbx-d");
  });

  test("a failing fallback rejects", async () => {
    const setter = new HostnameSetter({ fallback: [path.join(dir, "no-such-hostname")] });
    await assert.rejects(setter.set("sbx-e"));
  });

  test("the perl helper makes the sethostname syscall (in a UTS namespace of its own)", async (t) => {
    const argv = sethostnameHelper();
    const probe = spawnSync("unshare", ["--user", "--map-root-user", "--uts", "perl", "-e", "1"]);
    if (!argv || probe.status !== 0) {
      t.skip("needs perl, unshare and user namespaces on x64 or arm64");
      return;
    }
    const out = path.join(dir, "f-hostname");
    const wrapper = path.join(dir, "f-wrapper.sh");
    // The helper, then `hostname` in the same namespace: what the name became.
    writeFileSync(wrapper, `"$@"; hostname > ${JSON.stringify(out)}\n`);
    const setter = new HostnameSetter({
      helper: ["unshare", "--user", "--map-root-user", "--uts", "sh", wrapper, ...argv],
      fallback: [path.join(dir, "no-such-hostname")],
    });
    setter.arm();
    await setter.set("sbx-perl");
    for (let i = 0; i < 200 && !read(out); i++) await new Promise((r) => setTimeout(r, 10));
    assert.equal(read(out), "sbx-perl\n");
    assert.equal(sethostnameHelper("ia32"), undefined);
  });
});
