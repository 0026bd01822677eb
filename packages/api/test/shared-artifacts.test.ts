/**
 * Nodes that share artifacts (`--artifacts`): any node can start any build (it fetches what it
 * lacks), so with `sharedArtifacts` a create of a build may go to another node than the one that
 * built it; without, it goes only there.
 */
import assert from "node:assert/strict";
import { after, describe, test } from "node:test";
import { Code } from "@connectrpc/connect";
import { FakeOrchestrator } from "./fakes/fake-orchestrator.js";
import { backends } from "./helpers.js";
import {
  requestBuild,
  startBuild,
  startTemplateTestAPI,
  type TemplateTestAPI,
  waitForBuild,
} from "./template-helpers.js";

const backend = backends[0]!;

describe("creates of a build with shared artifacts", () => {
  const opened: TemplateTestAPI[] = [];
  after(async () => {
    for (const t of opened) await t.close();
  });

  async function twoNodes(sharedArtifacts: boolean) {
    const a = new FakeOrchestrator();
    const b = new FakeOrchestrator();
    const t = await startTemplateTestAPI(backend, {
      orchestrators: [
        { id: "node-a", transport: a.transport() },
        { id: "node-b", transport: b.transport() },
      ],
      sharedArtifacts,
    });
    opened.push(t);
    const built = await requestBuild(t, { name: "everywhere" });
    const started = await startBuild(t, built, { fromImage: "e2bdev/base", steps: [] });
    assert.equal(started.status, 202, await started.text());
    // Generous: a loaded machine (the unit tests run side by side) slows the fake's build.
    await waitForBuild(t, built, 60_000);
    const [builder, other] = a.templates.ready.has(built.buildID) ? [a, b] : [b, a];
    // What the shared store gives every node: the other node can start the build too.
    other.templates.ready.add(built.buildID);
    // The node that built it cannot take sandboxes now.
    builder.failNext("create", Code.Unavailable, "node down");
    const res = await t.request("/v2/sandboxes", { method: "POST", json: { templateID: "everywhere" } });
    return { res, built, other };
  }

  test("go to another node when the build's node cannot take them", async () => {
    const { res, built, other } = await twoNodes(true);
    assert.equal(res.status, 201, await res.clone().text());
    const { sandboxID } = (await res.json()) as { sandboxID: string };
    assert.equal(other.sandboxes.get(sandboxID)?.config.buildId, built.buildID);
  });

  test("without it, go only to the node that built it", async () => {
    const { res } = await twoNodes(false);
    assert.equal(res.status, 429, await res.clone().text());
  });
});
