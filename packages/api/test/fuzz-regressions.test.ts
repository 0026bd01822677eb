/**
 * Counterexamples the API fuzzer (fuzz.test.ts) found, shrunk, kept as plain requests so that
 * each bug stays fixed whatever seed the fuzzer runs with.
 */
import { after, before, describe, test } from "node:test";
import { backends, createSandbox, startTestAPI, type TestAPI } from "./helpers.js";
import { expectError } from "./template-helpers.js";

const ADMIN_TOKEN = "fuzz-admin-token-0123456789";

describe("API fuzz regressions", () => {
  let t: TestAPI;
  before(async () => {
    t = await startTestAPI(backends[0]!, { adminToken: ADMIN_TOKEN });
  });
  after(() => t.close());

  // PostgreSQL text cannot hold NUL: these reached the database and answered 500.
  test("a NUL character in the URL or a JSON body is a 400, not a database error", async () => {
    const nul = /NUL character/;
    await expectError(await t.request("/sandboxes/a%00b"), 400, nul);
    await expectError(await t.request("/sandboxes/a%00b/logs"), 400, nul);
    await expectError(await t.request("/v2/sandboxes?template=a%00"), 400, nul);
    await expectError(await t.request(`/sandboxes?metadata=${"%00".repeat(3)}`), 400, nul);
    await expectError(
      await t.request("/internal/catalog/a%00b", { key: null, headers: { "X-Admin-Token": ADMIN_TOKEN } }),
      400,
      nul,
    );
    await expectError(
      await t.request("/v2/sandboxes", {
        method: "POST",
        json: { templateID: "base", metadata: { a: "\u0000" } },
      }),
      400,
      nul,
    );
    // Encoded twice, as the SDK sends metadata filters: the NUL appears at the second decoding.
    await expectError(await t.request("/v2/sandboxes?metadata=a%253D%2500"), 400, nul);
  });

  test("an escaped backslash before u0000 is text, not a NUL", async () => {
    const { sandboxID } = await createSandbox(t, { metadata: { a: "\\u0000" } });
    const res = await t.request(`/sandboxes/${sandboxID}`);
    const body = (await res.json()) as { metadata: Record<string, string> };
    if (body.metadata.a !== "\\u0000")
      throw new Error(`metadata came back as ${JSON.stringify(body.metadata)}`);
  });
});
