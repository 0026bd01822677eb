import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { parseSudoArgs, targetArgv } from "../src/sudo/sudo.js";

describe("sudo stand-in arguments", () => {
  test("a plain command runs as root", () => {
    const args = parseSudoArgs(["apt-get", "install", "-y", "jq"]);
    assert.equal(args.user, "root");
    assert.deepEqual(targetArgv(args), { cmd: "apt-get", args: ["install", "-y", "jq"] });
  });

  test("-u picks the user in all its spellings; options after the command belong to it", () => {
    assert.equal(parseSudoArgs(["-u", "user", "id"]).user, "user");
    assert.equal(parseSudoArgs(["-uuser", "id"]).user, "user");
    assert.equal(parseSudoArgs(["--user=user", "id"]).user, "user");
    assert.deepEqual(parseSudoArgs(["-E", "--", "ls", "-la"]).command, ["ls", "-la"]);
    assert.equal(parseSudoArgs(["-E", "env"]).preserveEnv, true);
  });

  test("-i and -s run a shell, with the command when one is given", () => {
    assert.deepEqual(targetArgv(parseSudoArgs(["-i"])), { cmd: "/bin/bash", args: ["-l"] });
    assert.deepEqual(targetArgv(parseSudoArgs(["-s", "echo", "hi"])), {
      cmd: "/bin/bash",
      args: ["-c", "echo hi"],
    });
    assert.deepEqual(targetArgv(parseSudoArgs([])), { cmd: "/bin/bash", args: [] });
  });

  test("unsupported options are refused with a clear message", () => {
    assert.throws(() => parseSudoArgs(["-l"]), /not supported/);
  });
});
