/**
 * envd's vfork spawner (native/spawn.c) against Node's child_process, the way envd calls each: the
 * same commands must see the same process (arguments, environment, PATH search, working directory,
 * stdio, session, signal dispositions) and end the same way (exit code, signal, start error).
 * Terminals likewise against node-pty: the same terminal settings, size, session and environment.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { chmod, mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { VforkChild, VforkTerminal, vforkSpawner } from "../src/services/process/vfork-spawn.js";

interface Outcome {
  stdout: string;
  stderr: string;
  code: number | null;
  signal: string | null;
  error?: string;
}

interface Case {
  cmd: string;
  args?: string[];
  env?: Record<string, string>;
  cwd?: string;
  stdin?: string;
}

const BASE_ENV = { PATH: "/usr/local/bin:/usr/bin:/bin", LANG: "C" };

function collect(
  child: {
    stdout: NodeJS.ReadableStream;
    stderr: NodeJS.ReadableStream;
    stdin: NodeJS.WritableStream | null;
    once(e: "close", f: (c: number | null, s: string | null) => void): unknown;
  },
  input: string | undefined,
): Promise<Outcome> {
  let stdout = "";
  let stderr = "";
  child.stdout.on("data", (d: Buffer) => {
    stdout += d.toString();
  });
  child.stderr.on("data", (d: Buffer) => {
    stderr += d.toString();
  });
  if (input !== undefined) child.stdin!.end(input);
  return new Promise((resolve) =>
    child.once("close", (code, signal) => resolve({ stdout, stderr, code, signal })),
  );
}

async function viaNode(c: Case, cwd: string): Promise<Outcome> {
  const child = spawn(c.cmd, c.args ?? [], {
    cwd: c.cwd ?? cwd,
    env: { ...BASE_ENV, ...c.env },
    stdio: [c.stdin !== undefined ? "pipe" : "ignore", "pipe", "pipe"],
    detached: true,
  });
  if (child.pid === undefined) {
    const err = await new Promise<Error>((resolve) => child.once("error", resolve));
    return { stdout: "", stderr: "", code: null, signal: null, error: err.message };
  }
  return collect(child as never, c.stdin);
}

async function viaVfork(c: Case, cwd: string): Promise<Outcome> {
  let child: VforkChild;
  try {
    child = new VforkChild(vforkSpawner()!, c.cmd, c.args ?? [], {
      cwd: c.cwd ?? cwd,
      env: { ...BASE_ENV, ...c.env },
      stdin: c.stdin !== undefined,
    });
  } catch (err) {
    return { stdout: "", stderr: "", code: null, signal: null, error: (err as Error).message };
  }
  return collect(child as never, c.stdin);
}

// A child whose end never reaches JavaScript would hang the test: fail it instead.
describe("envd's vfork spawner starts what Node's spawn starts", { timeout: 60_000 }, () => {
  let dir: string;
  before(async () => {
    assert.ok(vforkSpawner(), "the addon is built (npm install runs node-gyp in packages/envd)");
    dir = await mkdtemp(path.join(tmpdir(), "moat-test-spawn-"));
    await writeFile(path.join(dir, "no-shebang"), 'echo "script $0 $1"; exit 7\n');
    await chmod(path.join(dir, "no-shebang"), 0o755);
    await writeFile(path.join(dir, "not-executable"), "echo never\n");
    await mkdir(path.join(dir, "bin"));
    await writeFile(path.join(dir, "bin", "only-here"), "#!/bin/sh\necho found on the given PATH\n");
    await chmod(path.join(dir, "bin", "only-here"), 0o755);
  });
  after(() => rm(dir, { recursive: true, force: true }));

  const cases: Record<string, () => Case> = {
    "arguments, environment and working directory": () => ({
      cmd: "/bin/sh",
      args: ["-c", 'printf "%s|" "$0" "$1" "$FOO" "$(pwd)"', "zero", "one two"],
      env: { FOO: "b\na r" },
    }),
    "output on both streams and an exit code": () => ({
      cmd: "sh",
      args: ["-c", "echo out; echo err >&2; exit 42"],
    }),
    "no descriptor of envd's reaches the command beyond what Node's spawn passes": () => ({
      cmd: "/bin/sh",
      args: ["-c", "ls /proc/$$/fd | sort -n | tr '\\n' ' '"],
      stdin: "",
    }),
    "stdio: /dev/null without stdin, sockets for the output": () => ({
      cmd: "/bin/sh",
      args: ["-c", "readlink /proc/self/fd/0; [ -S /dev/stdout ] && echo socket; [ -t 1 ] || echo no-tty"],
    }),
    "stdin: input then EOF": () => ({
      cmd: "/bin/sh",
      args: ["-c", "cat; echo eof"],
      stdin: "line 1\nline 2\n",
    }),
    "a session and process group of its own": () => ({
      cmd: "/bin/sh",
      args: [
        "-c",
        'test "$(ps -o sid= -p $$ | tr -d " ")" = $$ && test "$(ps -o pgid= -p $$ | tr -d " ")" = $$ && echo leader',
      ],
    }),
    "default signal dispositions and an empty mask (envd ignores SIGPIPE)": () => ({
      cmd: "/bin/sh",
      args: ["-c", "grep -E '^Sig(Blk|Ign)' /proc/self/status"],
    }),
    "killed by a signal": () => ({ cmd: "/bin/sh", args: ["-c", "kill -TERM $$"] }),
    "a bare name found on the PATH of the command's environment": () => ({
      cmd: "only-here",
      env: { PATH: `/nonexistent:${dir}/bin` },
    }),
    "a script without #! runs through /bin/sh": () => ({ cmd: path.join(dir, "no-shebang"), args: ["arg"] }),
    "a bare name that is nowhere on the PATH": () => ({ cmd: "moat-no-such-command" }),
    "a missing file": () => ({ cmd: path.join(dir, "missing") }),
    "a file that is not executable": () => ({ cmd: path.join(dir, "not-executable") }),
    "a directory": () => ({ cmd: dir }),
    "a missing working directory": () => ({ cmd: "/bin/true", cwd: path.join(dir, "missing") }),
  };
  for (const [name, make] of Object.entries(cases)) {
    test(name, async () => {
      // Up to three tries: a descriptor another thread of this test process holds open for a
      // moment can reach one child and not the other. A real difference shows every time.
      let node: Outcome | undefined;
      let vfork: Outcome | undefined;
      for (let attempt = 0; attempt < 3; attempt++) {
        node = await viaNode(make(), dir);
        vfork = await viaVfork(make(), dir);
        if (JSON.stringify(vfork) === JSON.stringify(node)) break;
      }
      assert.deepEqual(vfork, node);
    });
  }

  test("a NUL in the command, an argument or the environment is refused before any process", () => {
    for (const c of [
      { cmd: "a\0b", args: [], env: {} },
      { cmd: "/bin/echo", args: ["a\0"], env: {} },
      { cmd: "/bin/echo", args: [], env: { "A\0": "1" } },
      { cmd: "/bin/echo", args: [], env: { A: "\0" } },
    ]) {
      assert.throws(
        () => new VforkChild(vforkSpawner()!, c.cmd, c.args, { cwd: "/", env: c.env, stdin: false }),
        /null bytes/,
      );
    }
  });

  test("many at once, beside Node's own children: each its own output and exit code, every child reaped", async () => {
    const script = (i: number) => ({
      cmd: "/bin/sh",
      args: ["-c", `sleep 0.0${i % 10}; echo ${i}; exit ${i}`],
    });
    const [ours, nodes] = await Promise.all([
      Promise.all(Array.from({ length: 30 }, (_, i) => viaVfork(script(i), dir))),
      Promise.all(Array.from({ length: 10 }, (_, i) => viaNode(script(100 + i), dir))),
    ]);
    for (const [i, r] of ours.entries()) {
      assert.deepEqual(r, { stdout: `${i}\n`, stderr: "", code: i, signal: null });
    }
    for (const [i, r] of nodes.entries()) {
      assert.deepEqual(r, { stdout: `${100 + i}\n`, stderr: "", code: 100 + i, signal: null });
    }
    const zombies = await viaNode(
      { cmd: "/bin/sh", args: ["-c", `ps -o stat= --ppid ${process.pid} | grep -c Z || true`] },
      dir,
    );
    assert.equal(zombies.stdout.trim(), "0");
  });
});

/** What a terminal's program saw and how it ended, whichever way it was started. */
interface TerminalOutcome {
  output: string;
  exitCode: number;
  signal?: number;
}

interface TerminalLike {
  onData(listener: (chunk: Buffer) => void): unknown;
  onExit(listener: (e: { exitCode: number; signal?: number }) => void): unknown;
  write(data: Buffer): void;
  resize(cols: number, rows: number): void;
}

/** Runs a terminal to its end; `input` is typed once the output shows `prompt` (its echo then has one place). */
function runTerminal(terminal: TerminalLike, input?: string, prompt = ""): Promise<TerminalOutcome> {
  let output = "";
  let typed = input === undefined;
  terminal.onData((chunk) => {
    output += chunk.toString();
    if (!typed && output.includes(prompt)) {
      typed = true;
      terminal.write(Buffer.from(input!));
    }
  });
  return new Promise((resolve) =>
    terminal.onExit(({ exitCode, signal }) => resolve({ output, exitCode, ...(signal ? { signal } : {}) })),
  );
}

describe("envd's vfork terminals are node-pty's terminals", { timeout: 60_000 }, () => {
  const env = { ...BASE_ENV, TERM: "xterm-256color", HOME: "/" };
  // Settings, size, which fds are the terminal, the session and foreground group, the environment.
  const probe = [
    "stty -a | head -4",
    "for fd in 0 1 2; do [ -t $fd ] && printf 'tty%s ' $fd; done; echo",
    'set -- $(ps -o sid= -o pgid= -o tpgid= -p $$); [ "$1" = $$ ] && [ "$2" = $$ ] && [ "$3" = $$ ] && echo leader',
    'echo "term=$TERM pwd=$PWD cwd=$(pwd)"',
    'echo ready; read -r line; echo "got=$line"',
    "exit 7",
  ].join("; ");
  const normalise = (o: TerminalOutcome) => ({ ...o, output: o.output.replaceAll("\r\n", "\n") });

  async function viaNodePty(
    cmd: string,
    args: string[],
    input?: string,
    prompt?: string,
  ): Promise<TerminalOutcome> {
    const { spawn: spawnPTY } = await import("node-pty");
    const terminal = spawnPTY(cmd, args, {
      name: "xterm-256color",
      cols: 91,
      rows: 37,
      cwd: "/tmp",
      env,
      encoding: null,
    });
    return runTerminal(terminal as unknown as TerminalLike, input, prompt);
  }

  function viaVforkTerminal(
    cmd: string,
    args: string[],
    input?: string,
    prompt?: string,
  ): Promise<TerminalOutcome> {
    const terminal = new VforkTerminal(vforkSpawner()!, cmd, args, {
      cwd: "/tmp",
      env: { ...env, PWD: "/tmp", TERM: "xterm-256color" },
      cols: 91,
      rows: 37,
    });
    return runTerminal(terminal, input, prompt);
  }

  test("the same settings, size, session, environment, input and exit code", async () => {
    const [ours, theirs] = [
      await viaVforkTerminal("/bin/sh", ["-c", probe], "hello\n", "ready"),
      await viaNodePty("/bin/sh", ["-c", probe], "hello\n", "ready"),
    ];
    assert.deepEqual(normalise(ours), normalise(theirs));
    assert.match(ours.output, /rows 37; columns 91/);
    assert.match(ours.output, /tty0 tty1 tty2/);
    assert.match(ours.output, /leader/);
    assert.match(ours.output, /term=xterm-256color pwd=\/tmp cwd=\/tmp/);
    assert.match(ours.output, /got=hello/);
    assert.equal(ours.exitCode, 7);
  });

  test("a NUL anywhere, or a size no terminal has, is refused before any process", () => {
    const start = (cmd: string, args: string[], extra: Record<string, string>, cols = 80, rows = 24) =>
      new VforkTerminal(vforkSpawner()!, cmd, args, { cwd: "/tmp", env: { ...env, ...extra }, cols, rows });
    assert.throws(() => start("/bin/sh\0x", [], {}), /null bytes/);
    assert.throws(() => start("/bin/sh", ["-c", "true\0"], {}), /null bytes/);
    assert.throws(() => start("/bin/sh", [], { X: "a\0b" }), /null bytes/);
    for (const [cols, rows] of [
      [0, 24],
      [80, 0],
      [65_536, 24],
      [80, 70_000],
      [-1, 24],
    ]) {
      assert.throws(
        () => start("/bin/sh", [], {}, cols, rows),
        /terminal size out of range/,
        `${cols}x${rows}`,
      );
    }
  });

  test("a resize reaches the program; a signal ends it as a signal", async () => {
    const terminal = new VforkTerminal(
      vforkSpawner()!,
      "/bin/sh",
      ["-c", "trap 'stty size; exit 0' WINCH; while :; do sleep 0.05; done"],
      {
        cwd: "/tmp",
        env,
        cols: 80,
        rows: 24,
      },
    );
    const ended = runTerminal(terminal);
    await new Promise((r) => setTimeout(r, 300));
    terminal.resize(120, 40);
    const { output, exitCode } = await ended;
    assert.match(output, /40 120/);
    assert.equal(exitCode, 0);

    const killed = new VforkTerminal(vforkSpawner()!, "/bin/sleep", ["30"], {
      cwd: "/tmp",
      env,
      cols: 80,
      rows: 24,
    });
    const end = runTerminal(killed);
    process.kill(-killed.pid, "SIGKILL");
    assert.deepEqual(await end, { output: "", exitCode: 0, signal: 9 });
  });
});
