import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { hasNetnsCheckBug, isSupportedVersion, parseRunscVersion } from "../src/setup/runsc-version.js";

describe("parseRunscVersion", () => {
  test("Debian's build", () => {
    assert.deepEqual(parseRunscVersion("runsc version 0.0~20240729.0\nspec: 1.2.0\n"), {
      raw: "0.0~20240729.0",
      date: 20240729,
    });
  });

  test("an official release", () => {
    assert.deepEqual(parseRunscVersion("runsc version release-20240807.0\nspec: 1.1.0-rc.1\n"), {
      raw: "release-20240807.0",
      date: 20240807,
    });
  });

  test("a source build without a date keeps the raw version only", () => {
    assert.deepEqual(parseRunscVersion("runsc version VERSION_MISSING\n"), { raw: "VERSION_MISSING" });
  });

  test("output that is not runsc's", () => {
    assert.equal(parseRunscVersion("bash: runsc: command not found"), undefined);
    assert.equal(parseRunscVersion(""), undefined);
  });
});

describe("version policy", () => {
  const v = (raw: string) => parseRunscVersion(`runsc version ${raw}`)!;

  test("Debian 12's 20221219 is too old; Debian 13's and official releases are fine", () => {
    assert.equal(isSupportedVersion(v("0.0~20221219.0")), false);
    assert.equal(isSupportedVersion(v("0.0~20240729.0")), true);
    assert.equal(isSupportedVersion(v("release-20240807.0")), true);
    assert.equal(isSupportedVersion(v("VERSION_MISSING")), true);
  });

  test("releases before 20240801 have the root-netns misdetection", () => {
    assert.equal(hasNetnsCheckBug(v("0.0~20240729.0")), true);
    assert.equal(hasNetnsCheckBug(v("release-20240731.0")), true);
    assert.equal(hasNetnsCheckBug(v("release-20240801.0")), false);
    assert.equal(hasNetnsCheckBug(v("release-20250512.0")), false);
    // Unknown: possibly, so the probe and the smoke test decide.
    assert.equal(hasNetnsCheckBug(v("VERSION_MISSING")), true);
  });
});
