import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import {
  decodeCursor,
  encodeCursor,
  parseMetadataFilter,
  parseStateFilter,
} from "../src/handlers/list-filters.js";
import { backends, createSandbox, startTestAPI, type TestAPI } from "./helpers.js";

interface Listed {
  sandboxID: string;
  startedAt: string;
  metadata: Record<string, string>;
  state: string;
}

/** The metadata query value exactly as the e2b SDK builds it (before the transport encodes it). */
function sdkMetadataQuery(metadata: Record<string, string>): string {
  const encoded = Object.fromEntries(
    Object.entries(metadata).map(([k, v]) => [encodeURIComponent(k), encodeURIComponent(v)]),
  );
  return new URLSearchParams(encoded).toString();
}

describe("list filter parsing", () => {
  test("metadata: decoded twice, as the SDK encodes it", () => {
    const metadata = { "a b": "c&d=e", "ü/k": "100%", plus: "1+1" };
    assert.deepEqual(parseMetadataFilter(sdkMetadataQuery(metadata)), metadata);
    assert.equal(parseMetadataFilter(undefined), undefined);
    assert.equal(parseMetadataFilter(""), undefined);
    assert.throws(() => parseMetadataFilter("=v"), /empty key/);
  });

  test("state: comma-separated or repeated; both when absent; transitions show as where they started", () => {
    const all = ["running", "pausing", "paused", "resuming"];
    assert.deepEqual(parseStateFilter(undefined), all);
    assert.deepEqual(parseStateFilter("running"), ["running", "pausing"]);
    assert.deepEqual(parseStateFilter("paused"), ["paused", "resuming"]);
    assert.deepEqual(parseStateFilter("running,paused"), all);
    assert.deepEqual(parseStateFilter(["paused", "running"]), ["paused", "resuming", "running", "pausing"]);
    assert.throws(() => parseStateFilter("killed"), /'killed'/);
    assert.throws(() => parseStateFilter("pausing"), /'pausing'/, "internal states are not filters");
    assert.throws(() => parseStateFilter("constructor"), /'constructor'/);
  });

  test("cursor round-trips and refuses forgeries", () => {
    const at = { startedAt: new Date("2026-01-02T03:04:05.678Z"), sandboxID: "abc123" };
    assert.deepEqual(decodeCursor(encodeCursor(at)), at);
    assert.throws(() => decodeCursor(Buffer.from("x__y; drop table").toString("base64url")), /nextToken/);
  });
});

for (const backend of backends) {
  describe(`GET /v2/sandboxes (${backend.name})`, () => {
    let t: TestAPI;
    const ids: string[] = [];
    let firstStart: string;
    before(async () => {
      t = await startTestAPI(backend);
      for (let i = 0; i < 5; i++) {
        const metadata: Record<string, string> = { i: String(i), group: i % 2 === 0 ? "even" : "odd" };
        if (i === 3) metadata["odd key & stuff"] = "v=1&w=2 %";
        ids.push((await createSandbox(t, { metadata })).sandboxID);
        await new Promise((r) => setTimeout(r, 5));
      }
      const first = (await (await t.request(`/sandboxes/${ids[0]}`)).json()) as Listed;
      firstStart = first.startedAt;
    });
    after(() => t.close());

    const list = async (query: string) => {
      const res = await t.request(`/v2/sandboxes${query}`);
      assert.equal(res.status, 200, await res.clone().text());
      return { body: (await res.json()) as Listed[], next: res.headers.get("X-Next-Token"), res };
    };

    test("newest first by default, with X-Total-Running", async () => {
      const { body, next, res } = await list("");
      assert.deepEqual(
        body.map((s) => s.sandboxID),
        [...ids].reverse(),
      );
      assert.equal(next, null, "one page: no X-Next-Token");
      assert.equal(res.headers.get("X-Total-Running"), "5");
      assert.ok(body.every((s) => s.state === "running"));
    });

    test("pages of 2 cover everything once, in either order", async () => {
      for (const order of ["desc", "asc"] as const) {
        const seen: string[] = [];
        let token: string | null = null;
        let pages = 0;
        do {
          const page = await list(
            `?limit=2&order=${order}${token ? `&nextToken=${encodeURIComponent(token)}` : ""}`,
          );
          assert.ok(page.body.length <= 2);
          assert.equal(
            page.res.headers.get("X-Total-Running"),
            "5",
            "counts every page's filter, not the page",
          );
          seen.push(...page.body.map((s) => s.sandboxID));
          token = page.next;
          pages++;
        } while (token);
        assert.equal(pages, 3);
        assert.deepEqual(seen, order === "asc" ? ids : [...ids].reverse());
      }
    });

    test("metadata filter, as the SDK sends it", async () => {
      const even = await list(`?metadata=${encodeURIComponent(sdkMetadataQuery({ group: "even" }))}`);
      assert.deepEqual(even.body.map((s) => s.metadata.i).sort(), ["0", "2", "4"]);
      assert.equal(even.res.headers.get("X-Total-Running"), "3");
      const odd = await list(
        `?metadata=${encodeURIComponent(sdkMetadataQuery({ group: "odd", "odd key & stuff": "v=1&w=2 %" }))}`,
      );
      assert.deepEqual(
        odd.body.map((s) => s.sandboxID),
        [ids[3]],
      );
      const none = await list(`?metadata=${encodeURIComponent(sdkMetadataQuery({ group: "even", i: "1" }))}`);
      assert.deepEqual(none.body, []);
    });

    test("state, template and startedAfter filters", async () => {
      assert.equal((await list("?state=running")).body.length, 5);
      assert.equal((await list("?state=running,paused")).body.length, 5);
      const paused = await list("?state=paused");
      assert.deepEqual(paused.body, []);
      assert.equal(paused.res.headers.get("X-Total-Running"), null, "only when running ones were asked for");
      assert.equal((await list("?template=base")).body.length, 5);
      assert.equal((await list("?template=other")).body.length, 0);
      const after = await list(`?startedAfter=${encodeURIComponent(firstStart)}`);
      assert.equal(after.body.length, 5, "inclusive");
      const later = new Date(Date.parse(firstStart) + 1).toISOString();
      assert.equal((await list(`?startedAfter=${encodeURIComponent(later)}`)).body.length, 4);
    });

    test("killed sandboxes leave the list; the v1 list shows running ones", async () => {
      await t.request(`/sandboxes/${ids[4]}`, { method: "DELETE" });
      const { body, res } = await list("");
      assert.equal(body.length, 4);
      assert.equal(res.headers.get("X-Total-Running"), "4");
      const v1 = (await (await t.request("/sandboxes")).json()) as Listed[];
      assert.deepEqual(v1.map((s) => s.sandboxID).sort(), ids.slice(0, 4).sort());
      const v1Filtered = (await (
        await t.request(`/sandboxes?metadata=${encodeURIComponent(sdkMetadataQuery({ i: "2" }))}`)
      ).json()) as Listed[];
      assert.deepEqual(
        v1Filtered.map((s) => s.sandboxID),
        [ids[2]],
      );
    });
  });
}
