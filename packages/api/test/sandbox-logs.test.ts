import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { backends, createSandbox, startTestAPI, type TestAPI } from "./helpers.js";

interface V2Entry {
  timestamp: string;
  level: string;
  message: string;
  fields: Record<string, string>;
}

for (const backend of backends) {
  describe(`sandbox logs v2 (${backend.name})`, () => {
    let t: TestAPI;
    before(async () => {
      t = await startTestAPI(backend);
    });
    after(() => t.close());

    async function v2(sandboxID: string, query = "", key?: string) {
      const res = await t.request(`/v2/sandboxes/${sandboxID}/logs${query}`, key ? { key } : {});
      return { status: res.status, body: (await res.json()) as { logs: V2Entry[]; code?: number } };
    }

    test("merges the API's lifecycle entries with the node's by time, both ways", async () => {
      const sbx = await createSandbox(t);
      const at = Date.now() + 1000;
      t.fake.nodeLogs.set(sbx.sandboxID, [
        {
          timestamp: timestampFromDate(new Date(at)),
          level: "info",
          message: "hello from start",
          fields: { stream: "stdout" },
          source: "start",
        },
        {
          timestamp: timestampFromDate(new Date(at + 1)),
          level: "error",
          message: "oops",
          // A sandbox cannot pass its lines off as the API's.
          fields: { stream: "stderr", source: "api", logger: "api" },
          source: "start",
        },
      ]);
      const forward = await v2(sbx.sandboxID);
      assert.equal(forward.status, 200);
      assert.deepEqual(
        forward.body.logs.map((e) => [e.message, e.fields.source]),
        [
          ["sandbox created", "api"],
          ["hello from start", "start"],
          ["oops", "start"],
        ],
      );
      assert.equal(forward.body.logs[2]!.fields.logger, "start");
      assert.equal(forward.body.logs[2]!.level, "error");
      const backward = await v2(sbx.sandboxID, "?direction=backward&limit=2");
      assert.deepEqual(
        backward.body.logs.map((e) => e.message),
        ["oops", "hello from start"],
      );
      // The v1 route carries the node's entries too, in its own shape.
      const v1 = (await (await t.request(`/sandboxes/${sbx.sandboxID}/logs`)).json()) as {
        logs: Array<{ line: string }>;
      };
      const lines = v1.logs.map((l) => JSON.parse(l.line) as Record<string, string>);
      assert.deepEqual(
        lines.map((l) => [l.message, l.logger, l.level]),
        [
          ["sandbox created", "api", "info"],
          ["hello from start", "start", "info"],
          ["oops", "start", "error"],
        ],
      );
    });

    test("cursor, level and search filter the API's entries", async () => {
      const sbx = await createSandbox(t);
      await t.request(`/sandboxes/${sbx.sandboxID}`, { method: "DELETE" });
      const all = await v2(sbx.sandboxID);
      assert.deepEqual(
        all.body.logs.map((e) => e.message),
        ["sandbox created", "sandbox stopped"],
      );
      const created = Date.parse(all.body.logs[0]!.timestamp);
      assert.equal((await v2(sbx.sandboxID, `?cursor=${created}`)).body.logs.length, 2, "inclusive");
      assert.deepEqual(
        (await v2(sbx.sandboxID, `?cursor=${created}&direction=backward`)).body.logs.map((e) => e.message),
        ["sandbox created"],
      );
      assert.deepEqual((await v2(sbx.sandboxID, `?cursor=${Date.now() + 60_000}`)).body.logs, []);
      assert.deepEqual((await v2(sbx.sandboxID, "?level=error")).body.logs, []);
      assert.deepEqual(
        (await v2(sbx.sandboxID, "?search=stopped")).body.logs.map((e) => e.message),
        ["sandbox stopped"],
      );
      // A search is a plain substring: LIKE's wildcards mean themselves.
      assert.deepEqual((await v2(sbx.sandboxID, "?search=%25")).body.logs, []);
      assert.deepEqual((await v2(sbx.sandboxID, "?search=sandbox_")).body.logs, []);
    });

    test("bad queries are 400s; another team's sandbox is the 404 of a missing one", async () => {
      const sbx = await createSandbox(t);
      for (const q of [
        "?limit=0",
        "?limit=1001",
        "?cursor=-1",
        "?direction=up",
        "?level=trace",
        "?cursor=x",
      ]) {
        const res = await v2(sbx.sandboxID, q);
        assert.equal(res.status, 400, q);
        assert.equal(res.body.code, 400, q);
      }
      const other = await t.newTeam("intruder");
      t.fake.nodeLogs.set(sbx.sandboxID, [{ message: "secret", level: "info", source: "start" }]);
      const theirs = await v2(sbx.sandboxID, "", other.apiKey);
      assert.equal(theirs.status, 404);
      assert.equal((await v2("zzzzzzzzzzzzzzzzzzzz", "", other.apiKey)).status, 404);
      assert.ok(!JSON.stringify(theirs.body).includes("secret"));
    });

    test("a node that does not answer leaves the API's entries", async () => {
      const sbx = await createSandbox(t);
      t.fake.nodeLogs.set(sbx.sandboxID, [{ message: "from node", level: "info", source: "envd" }]);
      t.fake.setDown(true);
      try {
        const res = await v2(sbx.sandboxID);
        assert.equal(res.status, 200);
        assert.deepEqual(
          res.body.logs.map((e) => e.message),
          ["sandbox created"],
        );
      } finally {
        t.fake.setDown(false);
      }
    });
  });
}
