import assert from "node:assert/strict";
import { test } from "node:test";
import { InvalidArgumentError } from "commander";
import { parseNamePrefix, parseNodeID, parseStaticNode } from "../src/args/node.js";

test("--node <id>=<url> adds a node; bad ids, URLs and repeats are refused with what is accepted", () => {
  const one = parseStaticNode("node-1=http://10.98.1.2:5008/");
  assert.deepEqual(parseStaticNode("node-2=https://n2.example:5008", one), [
    { id: "node-1", url: "http://10.98.1.2:5008" },
    { id: "node-2", url: "https://n2.example:5008" },
  ]);
  for (const [value, message] of [
    ["http://10.98.1.2:5008", /expected <id>=<url>/],
    ["=http://x", /expected <id>=<url>/],
    ["a b=http://x", /node id must be 1 to 63 letters/],
    ["a=not a url", /is not a URL/],
    ["a=ftp://x", /must be an http:\/\/ or https:\/\/ URL/],
  ] as const) {
    assert.throws(
      () => parseStaticNode(value),
      (err: unknown) => err instanceof InvalidArgumentError && message.test(err.message),
      value,
    );
  }
  assert.throws(() => parseStaticNode("node-1=http://other:5008", one), /node 'node-1' is given twice/);
});

test("--node-id and --name-prefix", () => {
  assert.equal(parseNodeID("node-1"), "node-1");
  assert.throws(() => parseNodeID("-x"), InvalidArgumentError);
  assert.equal(parseNamePrefix("moat-2-"), "moat-2-");
  assert.throws(() => parseNamePrefix("moat-2"), /ending in '-'/);
});
