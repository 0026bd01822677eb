import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { InvalidImageReferenceError, parseImageReference } from "../src/template/oci/reference.js";

describe("image references", () => {
  test("Docker Hub names get the registry, library/ and latest", () => {
    assert.deepEqual(parseImageReference("python"), {
      registry: "registry-1.docker.io",
      repository: "library/python",
      reference: "latest",
    });
    assert.deepEqual(parseImageReference("docker.io/library/node:20-slim"), {
      registry: "registry-1.docker.io",
      repository: "library/node",
      reference: "20-slim",
    });
    assert.equal(parseImageReference("e2bdev/code-interpreter:v1").repository, "e2bdev/code-interpreter");
  });

  test("registries with a dot, a port or localhost; digests", () => {
    assert.deepEqual(parseImageReference("localhost:5000/team/img:tag"), {
      registry: "localhost:5000",
      repository: "team/img",
      reference: "tag",
    });
    const digest = `sha256:${"a".repeat(64)}`;
    assert.deepEqual(parseImageReference(`ghcr.io/org/img@${digest}`), {
      registry: "ghcr.io",
      repository: "org/img",
      reference: digest,
    });
    assert.equal(parseImageReference("127.0.0.1:5000/x").reference, "latest");
  });

  test("bad names are refused with the reason", () => {
    for (const bad of ["UPPER/case", "img:", "img@sha256:short", "a//b", ""]) {
      assert.throws(() => parseImageReference(bad), InvalidImageReferenceError, bad);
    }
  });
});
