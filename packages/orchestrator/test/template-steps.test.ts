import assert from "node:assert/strict";
import { describe, test } from "node:test";
import {
  type BuildContext,
  BuildStepError,
  expandEnv,
  layerKey,
  nextContext,
  parseStep,
  shellQuote,
} from "../src/template/build/steps.js";

const ctx: BuildContext = { env: {}, user: "user" };
const H = "a".repeat(64);

describe("template build steps", () => {
  test("E2B's step shapes parse; steps are numbered from 1 as the SDK maps them", () => {
    assert.deepEqual(parseStep({ type: "RUN", args: ["apt-get update", "root"] }, 0), {
      kind: "RUN",
      command: "apt-get update",
      user: "root",
    });
    assert.deepEqual(
      parseStep({ type: "COPY", args: ["app", "/srv/", "", "0644"], filesHash: H, filesURL: "u" }, 1),
      { kind: "COPY", src: "app", dest: "/srv/", owner: "", mode: "0644", filesHash: H, filesURL: "u" },
    );
    const bad = (input: Parameters<typeof parseStep>[0], pattern: RegExp, index = 4) =>
      assert.throws(
        () => parseStep(input, index),
        (err: unknown) =>
          err instanceof BuildStepError && err.step === String(index + 1) && pattern.test(err.message),
      );
    bad({ type: "RUN", args: [" "] }, /command is empty/);
    bad({ type: "COPY", args: ["../etc", "/x"], filesHash: H, filesURL: "u" }, /inside the build context/);
    bad({ type: "COPY", args: ["a", "/x"] }, /not uploaded/);
    bad({ type: "COPY", args: ["a", "/x", "", "rw"], filesHash: H, filesURL: "u" }, /invalid mode/);
    bad({ type: "ENV", args: ["A"] }, /pairs/);
    bad({ type: "ENV", args: ["1A", "x"] }, /invalid variable name/);
    bad({ type: "USER", args: ["bad user"] }, /invalid user/);
    bad({ type: "ADD", args: [] }, /unknown step type/);
  });

  test("ENV expands earlier values, WORKDIR resolves against the last one, USER switches", () => {
    let c = nextContext(
      ctx,
      parseStep({ type: "ENV", args: ["A", "1", "B", "$" + "{A}-$A", "PATH", "/opt/bin:$PATH"] }, 0),
    );
    assert.deepEqual(c.env, {
      A: "1",
      B: "1-1",
      PATH: "/opt/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    });
    c = nextContext(c, parseStep({ type: "WORKDIR", args: ["/srv"] }, 1));
    c = nextContext(c, parseStep({ type: "WORKDIR", args: ["app/$A"] }, 2));
    assert.equal(c.workdir, "/srv/app/1");
    assert.equal(nextContext(c, parseStep({ type: "USER", args: ["root"] }, 3)).user, "root");
    assert.equal(expandEnv("$MISSING|x", {}), "|x");
  });

  test("layer keys chain from the parent and ignore a COPY's expiring URL", () => {
    const copy = (url: string) =>
      parseStep({ type: "COPY", args: ["a", "/b"], filesHash: H, filesURL: url }, 0);
    assert.equal(
      layerKey("t", "p", copy("http://x?sig=1"), ctx),
      layerKey("t", "p", copy("http://x?sig=2"), ctx),
    );
    const run = parseStep({ type: "RUN", args: ["make"] }, 0);
    assert.notEqual(layerKey("t", "p", run, ctx), layerKey("t", "q", run, ctx));
    assert.notEqual(layerKey("t", "p", run, ctx), layerKey("t", "p", run, { ...ctx, user: "root" }));
    assert.notEqual(layerKey("t", "p", run, ctx), layerKey("t", "p", run, { ...ctx, env: { A: "1" } }));
    assert.notEqual(layerKey("t", "p", run, ctx), layerKey("t", "p", run, ctx, "forced-build"));
    assert.match(layerKey("t", "p", run, ctx), /^[0-9a-f]{32}$/);
  });

  test("layer keys are per team: the same step over the same parent is another layer for another team", () => {
    const run = parseStep({ type: "RUN", args: ["head -c 16 /dev/urandom > /secret"] }, 0);
    assert.notEqual(layerKey("team-a", "p", run, ctx), layerKey("team-b", "p", run, ctx));
    const copy = parseStep({ type: "COPY", args: ["a", "/b"], filesHash: H, filesURL: "u" }, 0);
    assert.notEqual(layerKey("team-a", "p", copy, ctx), layerKey("team-b", "p", copy, ctx));
    assert.throws(() => layerKey("", "p", run, ctx), /team/);
  });

  test("a COPY's files hash must be a SHA-256", () => {
    assert.throws(
      () => parseStep({ type: "COPY", args: ["a", "/b"], filesHash: "h1", filesURL: "u" }, 0),
      /SHA-256/,
    );
  });

  test("shell quoting keeps arguments whole", () => {
    assert.equal(shellQuote("plain/path.txt"), "plain/path.txt");
    assert.equal(shellQuote(""), "''");
    assert.equal(shellQuote("it's $x"), `'it'"'"'s $x'`);
  });
});
