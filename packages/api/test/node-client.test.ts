import assert from "node:assert/strict";
import { once } from "node:events";
import http2 from "node:http2";
import type { AddressInfo } from "node:net";
import { after, before, describe, test } from "node:test";
import { Code, ConnectError } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import { SandboxService } from "@moat/shared/gen/orchestrator";
import { NodeClient, NodeUnavailableError } from "../src/orchestrator/node-client.js";

const TOKEN = "n".repeat(64);

describe("node client: the node token", () => {
  let server: http2.Http2Server;
  let url: string;
  const seen: Array<string | null> = [];

  before(async () => {
    // An orchestrator's RPC as far as the token goes: it refuses calls without the right one.
    server = http2.createServer(
      connectNodeAdapter({
        routes: (router) => router.service(SandboxService, { list: () => ({ sandboxes: [] }) }),
        interceptors: [
          (next) => async (req) => {
            seen.push(req.header.get("authorization"));
            if (req.header.get("authorization") !== `Bearer ${TOKEN}`) {
              throw new ConnectError(
                "wrong node token: send 'authorization: Bearer <token>'",
                Code.Unauthenticated,
              );
            }
            return next(req);
          },
        ],
      }),
    );
    server.listen(0, "127.0.0.1");
    await once(server, "listening");
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });

  after(() => {
    server.close();
  });

  test("every call carries the node's token", async () => {
    const node = new NodeClient({ id: "node-1", url, token: TOKEN });
    try {
      assert.deepEqual(await node.list(), []);
      assert.equal(seen.at(-1), `Bearer ${TOKEN}`);
    } finally {
      node.close();
    }
  });

  test("a refused token makes the node unavailable, with what to configure", async () => {
    const node = new NodeClient({ id: "node-1", url, token: "x".repeat(64) });
    try {
      await assert.rejects(node.list(), (err: unknown) => {
        assert.ok(err instanceof NodeUnavailableError);
        assert.match(
          err.message,
          /^node 'node-1' is unavailable: it refused the API's node token \(wrong node token/,
        );
        assert.match(err.message, /the file node-token in the orchestrator's data directory/);
        return true;
      });
    } finally {
      node.close();
    }
  });
});
