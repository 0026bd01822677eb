import assert from "node:assert/strict";
import { test } from "node:test";
import { linkWasGone } from "../src/network/netns.js";

test("a link that is already gone, however ip says it, is not an error to delete", () => {
  // Not found by name.
  assert.ok(linkWasGone('Cannot find device "moat-v388"\n'));
  // Found, then destroyed before the delete arrived (its peer's namespace was being deleted): a
  // template build's release failed on this in CI.
  assert.ok(linkWasGone("RTNETLINK answers: No such device\n"));
  assert.ok(!linkWasGone("RTNETLINK answers: Operation not permitted\n"));
});
