import assert from "node:assert/strict";
import { test } from "node:test";
import { formatChecks } from "../src/commands/doctor.js";

test("doctor prints ok, warn and FIX lines, with the fix under the ones that need it", () => {
  const text = formatChecks([
    { name: "root", ok: true, detail: "running as root" },
    { name: "disk", ok: true, warning: true, detail: "3.1 GB free", fix: "Free some space" },
    { name: "runsc", ok: false, detail: "no runsc found", fix: "Run `moat setup`" },
  ]);
  assert.equal(
    text,
    [
      "ok   root: running as root",
      "warn disk: 3.1 GB free",
      "     → Free some space",
      "FIX  runsc: no runsc found",
      "     → Run `moat setup`",
      "",
    ].join("\n"),
  );
});
