/**
 * Paused sandboxes on any node, through the API on two fake nodes sharing an artifact store: a
 * published pause whose node is gone resumes on the other node (and the record moves there); an
 * unpublished one answers that its node is unavailable; the old node, back with its copy, drops
 * it without closing the record that now lives elsewhere.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { Code } from "@connectrpc/connect";
import { createNoopLogger } from "@moat/shared";
import { SandboxState } from "@moat/shared/gen/orchestrator";
// First: the API's schemas are made once its zod extensions are in place.
import "../src/index.js";
import type { APIContext } from "../src/context.js";
import type { SandboxRow } from "../src/db/schema.js";
import { NodeClient } from "../src/orchestrator/node-client.js";
import { RoundRobinPlacement } from "../src/placement/placement.js";
import { isStrayCopy, judgeOnNode, nodeStateChanges, stopEventApplies } from "../src/sandbox/reconcile.js";
import { checkMountsStillReady } from "../src/volume/mounts.js";
import { moveVolumes, volumeMoveTarget } from "../src/volume/move.js";
import { type FakeArtifacts, FakeOrchestrator } from "./fakes/fake-orchestrator.js";
import { backends, createSandbox, eventually, startTestAPI, type TestAPI } from "./helpers.js";

for (const backend of backends) {
  describe(`relocate paused sandboxes (${backend.name})`, () => {
    let t: TestAPI;
    const artifacts: FakeArtifacts = new Map();
    const nodes = { "node-1": new FakeOrchestrator(artifacts), "node-2": new FakeOrchestrator(artifacts) };
    // Without a store: its pauses are never published.
    const lonely = new FakeOrchestrator();

    before(async () => {
      t = await startTestAPI(backend, {
        orchestrators: [
          {
            id: "node-1",
            transport: nodes["node-1"].transport(),
            deadlines: { call: 2000, transition: 2000 },
          },
          {
            id: "node-2",
            transport: nodes["node-2"].transport(),
            deadlines: { call: 2000, transition: 2000 },
          },
        ],
      });
    });
    after(async () => {
      await t.close();
      for (const fake of [...Object.values(nodes), lonely]) fake.close();
    });

    const pause = (id: string) => t.request(`/sandboxes/${id}/pause`, { method: "POST", json: {} });
    const connect = (id: string) =>
      t.request(`/v2/sandboxes/${id}/connect`, { method: "POST", json: { timeout: 60 } });
    const record = (id: string) =>
      t.api.db.selectFrom("sandboxes").selectAll().where("sandbox_id", "=", id).executeTakeFirstOrThrow();
    /** A paused sandbox and the node it was paused on. */
    const pausedOn = async () => {
      const { sandboxID } = await createSandbox(t);
      assert.equal((await pause(sandboxID)).status, 204);
      const row = await record(sandboxID);
      const home = row.node_id as keyof typeof nodes;
      const other = home === "node-1" ? "node-2" : "node-1";
      return { id: sandboxID, row, home, other } as const;
    };

    test("a published pause whose node is gone resumes on the other node; the record moves", async () => {
      const { id, row, home, other } = await pausedOn();
      assert.equal(row.artifact_generation, 1, "the node's word: pause 1 is published");
      assert.ok(artifacts.has(`${id}/1`));
      nodes[home].goDown();
      try {
        const res = await connect(id);
        assert.equal(res.status, 201, await res.clone().text());
        const moved = await record(id);
        assert.equal(moved.state, "running");
        assert.equal(moved.node_id, other, "the record names the node it runs on now");
        assert.equal(moved.artifact_generation, null);
        assert.equal(moved.host_address, nodes[other].sandboxes.get(id)?.hostAddress);
        assert.equal(nodes[other].sandboxes.get(id)?.state, "running");
        assert.equal(artifacts.has(`${id}/1`), false, "the published pause is removed once it runs");
        // What follows goes to the new node.
        assert.equal((await pause(id)).status, 204);
        assert.equal(nodes[other].sandboxes.get(id)?.state, "paused");
        assert.equal((await record(id)).artifact_generation, 2);
      } finally {
        nodes[home].goDown(false);
      }
      // The old node is back with its copy of pause 1: its reconcile drops that copy, and the
      // KILLED event of the drop leaves the record (on the other node) alone.
      await eventually(async () => !nodes[home].sandboxes.has(id), 15_000);
      await new Promise((r) => setTimeout(r, 200));
      const kept = await record(id);
      assert.equal(kept.state, "paused");
      assert.equal(kept.node_id, other);
      assert.ok(artifacts.has(`${id}/2`), "the newer pause stays published");
      assert.equal((await connect(id)).status, 201);
      assert.equal(nodes[other].sandboxes.get(id)?.state, "running");
    });

    test("a node that refuses the resume as unavailable while it answers Get: paused there, resumed elsewhere", async () => {
      const { id, home, other } = await pausedOn();
      nodes[home].failNext("resume", Code.Unavailable, "resume failed; still paused");
      const res = await connect(id);
      assert.equal(res.status, 201, await res.clone().text());
      assert.equal((await record(id)).node_id, other);
      await t.request(`/sandboxes/${id}`, { method: "DELETE" });
    });

    test("a node still resuming it when the call timed out keeps it: no second copy", async () => {
      const { id, home, other } = await pausedOn();
      const hold = nodes[home].holdNext("resume");
      const res = await connect(id);
      assert.equal(res.status, 429, await res.clone().text());
      assert.equal(nodes[other].count("resume", id), 0, "the other node was never asked");
      assert.equal((await record(id)).node_id, home);
      hold.release();
      await eventually(async () => (await record(id)).state === "running");
      assert.equal((await record(id)).node_id, home);
      await t.request(`/sandboxes/${id}`, { method: "DELETE" });
    });

    test("no other node can take it: 503, still paused on its node, still published", async () => {
      const { id, home, other } = await pausedOn();
      nodes[home].goDown();
      nodes[other].failNext("resume", Code.ResourceExhausted, "full");
      try {
        const res = await connect(id);
        const body = (await res.json()) as { code: number; message: string };
        assert.equal(res.status, 503, JSON.stringify(body));
        assert.match(body.message, /unavailable.*no other node could resume it.*retry/);
        const row = await record(id);
        assert.equal(row.state, "paused");
        assert.equal(row.node_id, home);
        assert.equal(row.artifact_generation, 1);
      } finally {
        nodes[home].goDown(false);
      }
      assert.equal((await connect(id)).status, 201, "its node resumes it once back");
      assert.equal((await record(id)).node_id, home);
    });
  });

  describe(`unpublished paused sandboxes (${backend.name})`, () => {
    let t: TestAPI;
    const nodes = { "node-1": new FakeOrchestrator(), "node-2": new FakeOrchestrator() };
    before(async () => {
      t = await startTestAPI(backend, {
        orchestrators: [
          {
            id: "node-1",
            transport: nodes["node-1"].transport(),
            deadlines: { call: 2000, transition: 2000 },
          },
          {
            id: "node-2",
            transport: nodes["node-2"].transport(),
            deadlines: { call: 2000, transition: 2000 },
          },
        ],
      });
    });
    after(async () => {
      await t.close();
      for (const fake of Object.values(nodes)) fake.close();
    });

    test("its node gone: a clear error naming the node; it stays paused there", async () => {
      const { sandboxID: id } = await createSandbox(t);
      assert.equal((await t.request(`/sandboxes/${id}/pause`, { method: "POST", json: {} })).status, 204);
      const row = await t.api.db
        .selectFrom("sandboxes")
        .selectAll()
        .where("sandbox_id", "=", id)
        .executeTakeFirstOrThrow();
      assert.equal(row.artifact_generation, null);
      const home = row.node_id as keyof typeof nodes;
      nodes[home].goDown();
      try {
        const res = await t.request(`/v2/sandboxes/${id}/connect`, { method: "POST", json: { timeout: 60 } });
        const body = (await res.json()) as { code: number; message: string };
        assert.equal(res.status, 429, JSON.stringify(body));
        assert.match(body.message, new RegExp(`unavailable.*retry when node '${home}' is back`));
        for (const fake of Object.values(nodes))
          assert.equal(fake.count("resume", id), fake === nodes[home] ? 1 : 0);
      } finally {
        nodes[home].goDown(false);
      }
      const again = await t.request(`/v2/sandboxes/${id}/connect`, { method: "POST", json: { timeout: 60 } });
      assert.equal(again.status, 201);
    });
  });
}

for (const backend of backends) {
  describe(`volumes move between nodes (${backend.name})`, () => {
    let t: TestAPI;
    const nodes = { "node-1": new FakeOrchestrator(), "node-2": new FakeOrchestrator() };
    const store = new Map();
    for (const fake of Object.values(nodes)) fake.volumes.published = store;
    /** What moveVolumes needs of the API, with clients of its own to the same fake nodes. */
    let ctx: APIContext;
    before(async () => {
      t = await startTestAPI(backend, {
        orchestrators: Object.entries(nodes).map(([id, fake]) => ({ id, transport: fake.transport() })),
        quotas: { volumeSizeMB: 64 },
      });
      ctx = {
        db: t.api.db,
        config: t.api.config,
        logger: createNoopLogger(),
        placement: new RoundRobinPlacement(),
        nodes: new Map(
          Object.entries(nodes).map(([id, fake]) => [
            id,
            new NodeClient({ id, transport: fake.transport() }),
          ]),
        ),
      } as unknown as APIContext;
    });
    after(async () => {
      await t.close();
      for (const fake of Object.values(nodes)) fake.close();
    });

    const volumeRow = (id: string) =>
      t.api.db.selectFrom("volumes").selectAll().where("volume_id", "=", id).executeTakeFirstOrThrow();

    test("an unmounted volume moves with its files; one node holds it at a time; a mounted one stays", async () => {
      const res = await t.request("/volumes", { method: "POST", json: { name: "moving" } });
      const v = (await res.json()) as { volumeID: string; token: string };
      const file = `/volumecontent/${v.volumeID}/file?path=${encodeURIComponent("/a.txt")}`;
      const auth = { authorization: `Bearer ${v.token}` };
      const put = await t.request(file, {
        method: "PUT",
        body: "kept",
        key: null,
        headers: { ...auth, "content-type": "application/octet-stream" },
      });
      assert.equal(put.status, 201);
      const from = (await volumeRow(v.volumeID)).node_id as keyof typeof nodes;
      const to = from === "node-1" ? "node-2" : "node-1";
      const key = `${t.teamID}/${v.volumeID}`;
      const mounts = [{ name: "moving", path: "/mnt/v", volumeID: v.volumeID }];

      await moveVolumes(ctx, t.teamID, mounts, from, ctx.nodes.get(to)!);
      const moved = await volumeRow(v.volumeID);
      assert.equal(moved.node_id, to);
      assert.equal(moved.artifact_generation, 1);
      assert.equal(nodes[from].volumes.volumes.has(key), false, "the old node no longer holds it");
      assert.equal(nodes[to].volumes.volumes.has(key), true);
      assert.equal(store.size, 0, "the new node took it from the store");
      assert.equal(await (await t.request(file, { key: null, headers: auth })).text(), "kept");
      // A create that saw the volume on its old node stops under the team's lock.
      await assert.rejects(checkMountsStillReady(t.api.db, t.teamID, mounts, from), /moved to another node/);
      await checkMountsStillReady(t.api.db, t.teamID, mounts, to);

      // A sandbox that mounts it starts where it is now; while it lives the volume stays there.
      const sbx = await createSandbox(t, { volumeMounts: [{ name: "moving", path: "/mnt/v" }] });
      assert.ok(nodes[to].sandboxes.has(sbx.sandboxID));
      await assert.rejects(
        moveVolumes(ctx, t.teamID, mounts, to, ctx.nodes.get(from)!),
        /mounted by sandbox/,
      );
      assert.equal((await volumeRow(v.volumeID)).node_id, to);
      assert.equal(nodes[to].volumes.calls.filter((c) => c === "release").length, 0);

      // The old node refusing (a sandbox of its own mounts it): it stays, the record says so.
      await t.request(`/sandboxes/${sbx.sandboxID}`, { method: "DELETE" });
      nodes[to].volumes.inUse.set(v.volumeID, ["ghost"]);
      await assert.rejects(moveVolumes(ctx, t.teamID, mounts, to, ctx.nodes.get(from)!), /mounted by ghost/);
      assert.equal((await volumeRow(v.volumeID)).node_id, to);
      assert.equal(nodes[to].volumes.volumes.has(key), true);
      nodes[to].volumes.inUse.delete(v.volumeID);
    });

    test("where a create's volumes go: to the template's node, away from a draining node, else nowhere", () => {
      const node = (id: string, status?: string) =>
        ({ id, info: { status: status ?? "ready" } }) as unknown as NodeClient;
      const view = (list: NodeClient[]) =>
        ({ nodes: new Map(list.map((n) => [n.id, n])), placement: new RoundRobinPlacement() }) as const;
      const plain = view([node("a"), node("b")]);
      assert.equal(volumeMoveTarget(plain, undefined, null), undefined, "no volumes");
      assert.equal(volumeMoveTarget(plain, "a", null), undefined, "they stay on a node in service");
      assert.equal(volumeMoveTarget(plain, "a", "a"), undefined);
      assert.equal(volumeMoveTarget(plain, "a", "b")?.id, "b", "to the node the build is on");
      assert.equal(volumeMoveTarget(view([node("a", "draining"), node("b")]), "a", null)?.id, "b");
      assert.equal(volumeMoveTarget(plain, "gone", null), undefined, "a node the API cannot call keeps them");
    });
  });
}

describe("relocate rules", () => {
  const row = (changes: Partial<SandboxRow>): SandboxRow =>
    ({
      sandbox_id: "s1",
      node_id: "node-2",
      state: "paused",
      artifact_generation: null,
      ...changes,
    }) as SandboxRow;

  test("a copy on a node the settled record does not name is stray; between states it is not", () => {
    assert.equal(isStrayCopy(row({ state: "running" }), "node-1", false), true);
    assert.equal(isStrayCopy(row({ state: "paused" }), "node-1", false), true);
    assert.equal(isStrayCopy(row({ state: "paused" }), "node-2", false), false);
    assert.equal(isStrayCopy(row({ state: "resuming" }), "node-1", false), false);
    assert.equal(isStrayCopy(row({ state: "running" }), "node-1", true), false);
    assert.equal(isStrayCopy(undefined, "node-1", false), false);
  });

  test("only the record's own node closes it with a stop event", () => {
    assert.equal(stopEventApplies(row({}), "node-2"), true);
    assert.equal(stopEventApplies(row({}), "node-1"), false);
  });

  test("a resume fetching a published pause is not missing on its new node", () => {
    const now = new Date();
    assert.equal(
      judgeOnNode(row({ state: "resuming", artifact_generation: 3 }), undefined, now).action,
      "leave",
    );
    assert.equal(judgeOnNode(row({ state: "resuming" }), undefined, now).action, "close");
  });

  test("the node's word on what is published", () => {
    const paused = nodeStateChanges(row({ state: "pausing" }), {
      state: SandboxState.PAUSED,
      artifactGeneration: 4,
    } as never);
    assert.equal(paused?.artifact_generation, 4);
    const running = nodeStateChanges(row({ state: "resuming", artifact_generation: 4 }), {
      state: SandboxState.RUNNING,
      hostAddress: "10.11.0.2",
      artifactGeneration: 0,
    } as never);
    assert.equal(running?.artifact_generation, null);
  });
});
