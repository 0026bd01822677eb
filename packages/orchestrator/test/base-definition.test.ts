import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { BASE_DEFINITION, type BaseDefinition, definitionHash } from "../src/setup/base-definition.js";

describe("definitionHash", () => {
  const hash = definitionHash(BASE_DEFINITION);
  const variant = (change: Partial<BaseDefinition>) => definitionHash({ ...BASE_DEFINITION, ...change });

  test("is short hex and stable", () => {
    assert.match(hash, /^[0-9a-f]{16}$/);
    assert.equal(definitionHash(structuredClone(BASE_DEFINITION)), hash);
  });

  test("ignores package order and duplicates", () => {
    assert.equal(variant({ packages: [...BASE_DEFINITION.packages].reverse() }), hash);
    assert.equal(variant({ packages: [...BASE_DEFINITION.packages, "curl"] }), hash);
  });

  test("changes with the suite, the packages, the script or its version", () => {
    const others = [
      variant({ suite: "trixie" }),
      variant({ variant: "buildd" }),
      variant({ packages: [...BASE_DEFINITION.packages, "vim"] }),
      variant({ setupScriptVersion: BASE_DEFINITION.setupScriptVersion + 1 }),
      variant({ setupScript: `${BASE_DEFINITION.setupScript}\ntrue\n` }),
    ];
    for (const other of others) assert.notEqual(other, hash);
    assert.equal(new Set(others).size, others.length);
  });
});

describe("BASE_DEFINITION", () => {
  test("has what sandboxes and agents rely on", () => {
    assert.equal(BASE_DEFINITION.suite, "bookworm");
    assert.equal(BASE_DEFINITION.variant, "minbase");
    for (const pkg of [
      "bash",
      "coreutils",
      "procps",
      "python3",
      "python3-pip",
      "ca-certificates",
      "curl",
      "git",
    ]) {
      assert.ok(BASE_DEFINITION.packages.includes(pkg), pkg);
    }
    for (const pkg of ["sudo", "unzip", "tini", "iproute2"])
      assert.ok(BASE_DEFINITION.packages.includes(pkg), pkg);
  });

  test("the setup script makes the E2B user, sudoers entry and directories", () => {
    const script = BASE_DEFINITION.setupScript;
    assert.match(
      script,
      /useradd --uid 1000 .*--home-dir \/home\/user --shell \/bin\/bash --groups sudo user/,
    );
    assert.match(script, /user ALL=\(ALL:ALL\) NOPASSWD: ALL\\n' > \/etc\/sudoers\.d\//);
    assert.match(script, /mkdir -p \/opt\/moat \/code/);
    assert.match(script, /chmod -R 777 \/usr\/local/);
    assert.match(script, /^set -euo pipefail/);
  });
});
