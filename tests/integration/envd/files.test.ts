import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import {
  chmodSync,
  chownSync,
  closeSync,
  existsSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  readSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import http from "node:http";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { gzipSync } from "node:zlib";
import {
  AuthenticationError,
  FileNotFoundError,
  InvalidArgumentError,
  NotEnoughSpaceError,
  type Sandbox,
} from "e2b";
import { readMetadata } from "../../../packages/envd/src/fs/metadata.js";
import { debugSandbox, ENVD_URL, makeUserDir, type RunningEnvd, startEnvd } from "../helpers/envd.js";

const sha256 = (data: Uint8Array) => createHash("sha256").update(data).digest("hex");
const uidOf = (name: string) => Number(execFileSync("id", ["-u", name], { encoding: "utf8" }).trim());
const gidOf = (name: string) => Number(execFileSync("id", ["-g", name], { encoding: "utf8" }).trim());

async function collect(stream: ReadableStream<Uint8Array>): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream as unknown as AsyncIterable<Uint8Array>) chunks.push(Buffer.from(chunk));
  return Buffer.concat(chunks);
}

/** envd's REST error body. */
async function errorBody(res: Response): Promise<{ code: number; message: string }> {
  return (await res.json()) as { code: number; message: string };
}

function filesURL(query: Record<string, string>): string {
  return `${ENVD_URL}/files?${new URLSearchParams(query)}`;
}

/** lchown: gives a symlink itself to a user, as if they had made it. */
function chownLink(link: string, name: string): void {
  execFileSync("chown", ["-h", name, link]);
}

/** Leftover temp files of interrupted uploads in `dir`, which must never exist. */
function tempFiles(dir: string): string[] {
  return existsSync(dir) ? readdirSync(dir).filter((n) => n.startsWith(".moat-")) : [];
}

describe("envd /files through the e2b SDK", () => {
  let envd: RunningEnvd;
  let sbx: Sandbox;
  let dir: string;
  const homeFiles: string[] = [];

  before(async () => {
    envd = await startEnvd();
    sbx = await debugSandbox();
    dir = makeUserDir("/tmp/moat-test-files-");
  });
  after(async () => {
    await envd.stop();
    rmSync(dir, { recursive: true, force: true });
    for (const f of homeFiles) rmSync(f, { force: true });
  });

  test("writes and reads text, bytes, blobs and streams", async () => {
    const file = path.join(dir, "text.txt");
    const info = await sbx.files.write(file, "hello, envd\n");
    assert.deepEqual(
      { path: info.path, name: info.name, type: info.type },
      { path: file, name: "text.txt", type: "file" },
    );
    assert.equal(await sbx.files.read(file), "hello, envd\n");

    const bytes = randomBytes(4096);
    const binFile = path.join(dir, "bin.dat");
    await sbx.files.write(binFile, bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.length));
    assert.deepEqual(Buffer.from(await sbx.files.read(binFile, { format: "bytes" })), bytes);

    const blob = await sbx.files.read(binFile, { format: "blob" });
    assert.deepEqual(Buffer.from(await blob.arrayBuffer()), bytes);

    const stream = await sbx.files.read(binFile, { format: "stream" });
    assert.deepEqual(await collect(stream), bytes);

    const blobFile = path.join(dir, "from-blob.txt");
    await sbx.files.write(blobFile, new Blob(["from a blob"]));
    assert.equal(readFileSync(blobFile, "utf8"), "from a blob");
  });

  test("an empty file reads back empty", async () => {
    const file = path.join(dir, "empty.txt");
    await sbx.files.write(file, "");
    assert.equal(statSync(file).size, 0);
    assert.equal(await sbx.files.read(file), "");
    assert.equal((await sbx.files.read(file, { format: "bytes" })).length, 0);
  });

  test("uploads a ReadableStream as a streamed octet-stream body", async () => {
    const file = path.join(dir, "streamed.bin");
    const parts = [randomBytes(100_000), randomBytes(50_000), randomBytes(10)];
    const body = new ReadableStream<Uint8Array>({
      start(controller) {
        for (const p of parts) controller.enqueue(new Uint8Array(p));
        controller.close();
      },
    });
    await sbx.files.write(file, body);
    assert.equal(sha256(readFileSync(file)), sha256(Buffer.concat(parts)));
  });

  test("a 10 MB random file round-trips intact (multipart and octet-stream)", async (t) => {
    const data = randomBytes(10 * 1024 * 1024);
    const ab = data.buffer.slice(data.byteOffset, data.byteOffset + data.length);
    for (const useOctetStream of [false, true]) {
      const file = path.join(dir, `big-${useOctetStream ? "raw" : "multipart"}.bin`);
      const started = performance.now();
      await sbx.files.write(file, ab, { useOctetStream });
      const written = performance.now();
      const back = await sbx.files.read(file, { format: "bytes" });
      const read = performance.now();
      t.diagnostic(
        `${useOctetStream ? "octet-stream" : "multipart"}: write ${(written - started).toFixed(0)} ms, read ${(read - written).toFixed(0)} ms`,
      );
      assert.equal(back.length, data.length);
      assert.equal(sha256(back), sha256(data));
      assert.equal(sha256(readFileSync(file)), sha256(data));
      assert.deepEqual(tempFiles(dir), []);
    }
  });

  test("gzip uploads and downloads", async () => {
    const file = path.join(dir, "gz.txt");
    const text = "compress me please\n".repeat(5000);
    await sbx.files.write(file, text, { gzip: true });
    assert.equal(readFileSync(file, "utf8"), text);
    assert.equal(await sbx.files.read(file, { gzip: true }), text);

    const res = await fetch(filesURL({ path: file }), { headers: { "accept-encoding": "gzip" } });
    assert.equal(res.status, 200);
    assert.equal(res.headers.get("content-encoding"), "gzip");
    assert.equal(res.headers.get("vary"), "Accept-Encoding");
    assert.equal(await res.text(), text);

    // Node's fetch sends `gzip, deflate` on its own: that alone does not make envd compress.
    const plain = await fetch(filesURL({ path: file }));
    assert.equal(plain.headers.get("content-encoding"), null);
    assert.equal(plain.headers.get("content-length"), String(text.length));
    await plain.arrayBuffer();

    const refused = await fetch(filesURL({ path: file }), {
      headers: { "accept-encoding": "br, identity;q=0" },
    });
    assert.equal(refused.status, 406);
    assert.equal((await errorBody(refused)).code, 406);
  });

  test("useOctetStream uploads", async () => {
    const file = path.join(dir, "octet.txt");
    const info = await sbx.files.write(file, "raw body", { useOctetStream: true });
    assert.equal(info.path, file);
    assert.equal(readFileSync(file, "utf8"), "raw body");
  });

  test("writes several files in one multipart request, creating parent dirs", async () => {
    const files = [
      { path: path.join(dir, "multi/a.txt"), data: "A" },
      { path: path.join(dir, "multi/deep/b.txt"), data: new Blob(["B"]) },
      { path: path.join(dir, "multi/c.bin"), data: new Uint8Array([1, 2, 3]).buffer },
    ];
    const infos = await sbx.files.write(files);
    assert.deepEqual(
      infos.map((i) => i.path),
      files.map((f) => f.path),
    );
    assert.equal(readFileSync(files[0]!.path, "utf8"), "A");
    assert.equal(readFileSync(files[1]!.path, "utf8"), "B");
    assert.deepEqual([...readFileSync(files[2]!.path)], [1, 2, 3]);
  });

  test("stores metadata as xattrs and replaces it on every upload", async () => {
    const file = path.join(dir, "meta.txt");
    const info = await sbx.files.write(file, "x", { metadata: { Author: "me", purpose: "test run" } });
    assert.deepEqual(info.metadata, { author: "me", purpose: "test run" });
    assert.deepEqual(await readMetadata(file), { author: "me", purpose: "test run" });

    const again = await sbx.files.write(file, "y", { metadata: { other: "1" } });
    assert.deepEqual(again.metadata, { other: "1" });
    assert.deepEqual(await readMetadata(file), { other: "1" });

    const cleared = await sbx.files.write(file, "z");
    assert.equal(cleared.metadata, undefined);
    assert.deepEqual(await readMetadata(file), {});

    const tooBig = await fetch(filesURL({ path: file }), {
      method: "POST",
      headers: { "content-type": "application/octet-stream", "x-metadata-big": "v".repeat(5000) },
      body: "w",
    });
    assert.equal(tooBig.status, 400);
    assert.match((await errorBody(tooBig)).message, /metadata/);
    assert.equal(readFileSync(file, "utf8"), "z");
  });

  test("files belong to the default user, or to root when asked", async () => {
    const userUID = uidOf("user");
    const asUser = path.join(dir, "owned/by-user.txt");
    await sbx.files.write(asUser, "u");
    assert.equal(statSync(asUser).uid, userUID);
    assert.equal(statSync(path.dirname(asUser)).uid, userUID, "created parent dirs belong to the user");
    assert.equal(statSync(asUser).mode & 0o777, 0o644);

    const asRoot = path.join(dir, "owned/by-root.txt");
    await sbx.files.write(asRoot, "r", { user: "root" });
    assert.equal(statSync(asRoot).uid, 0);
  });

  test("relative paths resolve against the user's home", async () => {
    const name = `moat-test-rel-${randomBytes(4).toString("hex")}.txt`;
    homeFiles.push(path.join("/home/user", name));
    const info = await sbx.files.write(name, "home");
    assert.equal(info.path, path.join("/home/user", name));
    assert.equal(await sbx.files.read(`~/${name}`), "home");
  });

  test("overwriting keeps the file's mode and writes through symlinks", async () => {
    const script = path.join(dir, "run.sh");
    await sbx.files.write(script, "#!/bin/sh\necho 1\n");
    chmodSync(script, 0o755);
    await sbx.files.write(script, "#!/bin/sh\necho 2\n");
    assert.equal(statSync(script).mode & 0o777, 0o755);

    const target = path.join(dir, "link-target.txt");
    const link = path.join(dir, "link.txt");
    writeFileSync(target, "old");
    chownSync(target, uidOf("user"), gidOf("user"));
    symlinkSync(target, link);
    await sbx.files.write(link, "new");
    assert.equal(readFileSync(target, "utf8"), "new");
    assert.equal(await sbx.files.read(link), "new");
  });

  test("overwriting writes in place: the inode stays, hard links and open readers see the new content", async () => {
    const file = path.join(dir, "in-place.txt");
    await sbx.files.write(file, "version one, long enough to be cut");
    const before = statSync(file);
    const link = path.join(dir, "in-place-link.txt");
    execFileSync("ln", [file, link]);
    const reader = openSync(file, "r");
    try {
      await sbx.files.write(file, "version two");
      await sbx.files.write(file, "version 3", { useOctetStream: true });
      assert.equal(statSync(file).ino, before.ino);
      assert.equal(readFileSync(link, "utf8"), "version 3");
      const buf = Buffer.alloc(64);
      assert.equal(buf.subarray(0, readSync(reader, buf, 0, 64, 0)).toString(), "version 3");
    } finally {
      closeSync(reader);
    }
  });

  test("reads pseudo files whose size is reported as 0", async () => {
    const version = await sbx.files.read("/proc/version");
    assert.match(version, /Linux/);
  });

  test("a missing file is FileNotFoundError; a directory or unknown user is refused", async () => {
    const missing = path.join(dir, "nope.txt");
    await assert.rejects(sbx.files.read(missing), FileNotFoundError);
    const res = await fetch(filesURL({ path: missing }));
    assert.equal(res.status, 404);
    assert.deepEqual(await res.json(), { code: 404, message: `path '${missing}' does not exist` });

    await assert.rejects(sbx.files.read(dir), InvalidArgumentError);
    await assert.rejects(
      sbx.files.read(path.join(dir, "text.txt"), { user: "no-such-user-moat" }),
      AuthenticationError,
    );
    await assert.rejects(
      sbx.files.write(path.join(dir, "x.txt"), "x", { user: "no-such-user-moat" }),
      AuthenticationError,
    );

    const noPath = await fetch(`${ENVD_URL}/files`);
    assert.equal(noPath.status, 400);
    assert.equal((await errorBody(noPath)).code, 400);
  });

  test("Range and conditional requests", async () => {
    const file = path.join(dir, "range.txt");
    writeFileSync(file, "0123456789");
    const part = await fetch(filesURL({ path: file }), { headers: { range: "bytes=2-5" } });
    assert.equal(part.status, 206);
    assert.equal(part.headers.get("content-range"), "bytes 2-5/10");
    assert.equal(await part.text(), "2345");

    const suffix = await fetch(filesURL({ path: file }), { headers: { range: "bytes=-3" } });
    assert.equal(await suffix.text(), "789");

    const tooFar = await fetch(filesURL({ path: file }), { headers: { range: "bytes=10-" } });
    assert.equal(tooFar.status, 416);
    assert.equal(tooFar.headers.get("content-range"), "bytes */10");
    assert.equal((await errorBody(tooFar)).code, 416);

    const full = await fetch(filesURL({ path: file }));
    const etag = full.headers.get("etag")!;
    assert.match(full.headers.get("content-disposition")!, /^inline; filename="range.txt"$/);
    assert.equal(full.headers.get("content-type"), "application/octet-stream");
    await full.arrayBuffer();
    const notModified = await fetch(filesURL({ path: file }), { headers: { "if-none-match": etag } });
    assert.equal(notModified.status, 304);
    const stale = await fetch(filesURL({ path: file }), {
      headers: { range: "bytes=0-0", "if-range": '"other"' },
    });
    assert.equal(stale.status, 200);
    assert.equal(await stale.text(), "0123456789");
  });

  test("raw uploads need a path; bad bodies are 4xx and leave nothing behind", async () => {
    const noPath = await fetch(`${ENVD_URL}/files`, {
      method: "POST",
      headers: { "content-type": "application/octet-stream" },
      body: "x",
    });
    assert.equal(noPath.status, 400);
    assert.match((await errorBody(noPath)).message, /path/);

    const badType = await fetch(filesURL({ path: path.join(dir, "t.txt") }), {
      method: "POST",
      headers: { "content-type": "text/plain" },
      body: "x",
    });
    assert.equal(badType.status, 400);

    const corrupt = path.join(dir, "bad-gzip/corrupt.txt");
    const badGzip = await fetch(filesURL({ path: corrupt }), {
      method: "POST",
      headers: { "content-type": "application/octet-stream", "content-encoding": "gzip" },
      body: Buffer.concat([gzipSync("fine start ".repeat(1000)).subarray(0, 200), Buffer.from("garbage")]),
    });
    assert.equal(badGzip.status, 400);
    assert.match((await errorBody(badGzip)).message, /decompress/);
    assert.equal(existsSync(corrupt), false);
    assert.deepEqual(tempFiles(path.dirname(corrupt)), []);

    const badEncoding = await fetch(filesURL({ path: corrupt }), {
      method: "POST",
      headers: { "content-type": "application/octet-stream", "content-encoding": "br" },
      body: "x",
    });
    assert.equal(badEncoding.status, 415);

    const intoDir = await fetch(filesURL({ path: dir }), {
      method: "POST",
      headers: { "content-type": "application/octet-stream" },
      body: "x",
    });
    assert.equal(intoDir.status, 400);
    assert.match((await errorBody(intoDir)).message, /is a directory/);

    writeFileSync(path.join(dir, "plain-file"), "");
    const underFile = await fetch(filesURL({ path: path.join(dir, "plain-file/child.txt") }), {
      method: "POST",
      headers: { "content-type": "application/octet-stream" },
      body: "x",
    });
    assert.equal(underFile.status, 400);
  });

  test("multipart: duplicate paths, missing filenames and malformed bodies are 400", async () => {
    const dup = path.join(dir, "dup.txt");
    const form = new FormData();
    form.append("file", new Blob(["one"]), dup);
    form.append("file", new Blob(["two"]), dup);
    const res = await fetch(`${ENVD_URL}/files`, { method: "POST", body: form });
    assert.equal(res.status, 400);
    assert.match((await errorBody(res)).message, /same path/);

    const noBoundary = await fetch(filesURL({ path: path.join(dir, "nb.txt") }), {
      method: "POST",
      headers: { "content-type": "multipart/form-data" },
      body: "whatever",
    });
    assert.equal(noBoundary.status, 400);

    const truncatedPath = path.join(dir, "truncated.txt");
    const truncated = await fetch(`${ENVD_URL}/files`, {
      method: "POST",
      headers: { "content-type": "multipart/form-data; boundary=XX" },
      body: `--XX\r\nContent-Disposition: form-data; name="file"; filename="${truncatedPath}"\r\n\r\npartial data`,
    });
    assert.equal(truncated.status, 400);
    assert.equal(existsSync(truncatedPath), false);
    assert.deepEqual(tempFiles(dir), []);

    const noFile = new FormData();
    noFile.append("other", "value");
    const empty = await fetch(`${ENVD_URL}/files`, { method: "POST", body: noFile });
    assert.equal(empty.status, 400);
  });

  test("a client that disconnects mid-upload leaves no file behind, and envd keeps serving", async () => {
    const target = path.join(dir, "aborted/file.bin");
    await new Promise<void>((resolve) => {
      const req = http.request(filesURL({ path: target }), {
        method: "POST",
        headers: { "content-type": "application/octet-stream", "content-length": String(50 * 1024 * 1024) },
      });
      req.on("error", () => resolve());
      req.write(randomBytes(2 * 1024 * 1024), () => {
        setTimeout(() => {
          req.destroy();
          resolve();
        }, 100);
      });
    });
    // envd notices the hang-up, then removes the file this upload created.
    for (let i = 0; i < 50 && existsSync(target); i++) await new Promise((r) => setTimeout(r, 20));
    assert.equal(existsSync(target), false);
    assert.deepEqual(tempFiles(path.dirname(target)), []);
    assert.equal(await sbx.files.read(path.join(dir, "text.txt")), "hello, envd\n");
  });

  test("a full disk is 507 and leaves no partial file", async () => {
    const small = path.join(dir, "small-disk");
    mkdirSync(small);
    // The integration tests run as root, which mounting needs.
    execFileSync("mount", ["-t", "tmpfs", "-o", "size=1m", "tmpfs", small], { stdio: "ignore" });
    try {
      const target = path.join(small, "big.bin");
      const res = await fetch(filesURL({ path: target }), {
        method: "POST",
        headers: { "content-type": "application/octet-stream" },
        body: new Uint8Array(3 * 1024 * 1024),
      });
      assert.equal(res.status, 507);
      assert.equal((await errorBody(res)).code, 507);
      await assert.rejects(
        sbx.files.write(target, new Uint8Array(3 * 1024 * 1024).buffer),
        NotEnoughSpaceError,
      );
      assert.equal(existsSync(target), false);
      assert.deepEqual(tempFiles(small), []);

      // Over an existing file, written in place as E2B does: what fit stays, and the error says so.
      const existing = path.join(small, "existing.bin");
      writeFileSync(existing, "old content");
      chownSync(existing, uidOf("user"), gidOf("user"));
      const ino = statSync(existing).ino;
      const over = await fetch(filesURL({ path: existing }), {
        method: "POST",
        headers: { "content-type": "application/octet-stream" },
        body: new Uint8Array(3 * 1024 * 1024),
      });
      assert.equal(over.status, 507);
      assert.match((await errorBody(over)).message, /not enough disk space.*holds only what was written/);
      assert.equal(statSync(existing).ino, ino);
    } finally {
      execFileSync("umount", ["-l", small], { stdio: "ignore" });
    }
  });

  test("compose concatenates sources into the destination and removes them", async () => {
    mkdirSync(path.join(dir, "parts"), { recursive: true });
    chownSync(path.join(dir, "parts"), uidOf("user"), gidOf("user"));
    const sources = ["p1", "p2", "p3"].map((n) => path.join(dir, "parts", n));
    for (const [i, s] of sources.entries()) writeFileSync(s, `chunk${i};`);
    const destination = path.join(dir, "composed/out.txt");
    const res = await fetch(`${ENVD_URL}/files/compose`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ source_paths: sources, destination }),
    });
    assert.equal(res.status, 200);
    assert.deepEqual(await res.json(), { path: destination, name: "out.txt", type: "file" });
    assert.equal(readFileSync(destination, "utf8"), "chunk0;chunk1;chunk2;");
    assert.equal(statSync(destination).uid, uidOf("user"));
    for (const s of sources) assert.equal(existsSync(s), false);

    const missing = await fetch(`${ENVD_URL}/files/compose`, {
      method: "POST",
      body: JSON.stringify({ source_paths: [path.join(dir, "parts/none")], destination }),
    });
    assert.equal(missing.status, 404);
    const invalid = await fetch(`${ENVD_URL}/files/compose`, {
      method: "POST",
      body: JSON.stringify({ source_paths: "nope", destination }),
    });
    assert.equal(invalid.status, 400);
    const notJSON = await fetch(`${ENVD_URL}/files/compose`, { method: "POST", body: "{" });
    assert.equal(notJSON.status, 400);
  });

  test("a gzip body that expands past reason is 413 and leaves nothing behind", async () => {
    const target = path.join(dir, "bomb/zeros.bin");
    const bomb = gzipSync(Buffer.alloc(100 * 1024 * 1024));
    const res = await fetch(filesURL({ path: target }), {
      method: "POST",
      headers: { "content-type": "application/octet-stream", "content-encoding": "gzip" },
      body: bomb,
    });
    assert.equal(res.status, 413);
    assert.match((await errorBody(res)).message, /expands more than/);
    assert.equal(existsSync(target), false);
    assert.deepEqual(tempFiles(path.dirname(target)), []);
    // Ordinary compressible data well past the free allowance goes through.
    const lines: string[] = [];
    for (let i = 0; i < 1_600_000; i++) {
      lines.push(`${i} ${((i * 2654435761) >>> 0).toString(16)} GET /api/items/${i % 977} 200 ${i % 13}ms\n`);
    }
    const text = Buffer.from(lines.join(""));
    assert.ok(text.length > 64 * 1024 * 1024);
    const log = path.join(dir, "bomb/log.txt");
    await sbx.files.write(log, text.buffer.slice(text.byteOffset, text.byteOffset + text.length), {
      gzip: true,
    });
    assert.equal(statSync(log).size, text.length);
  });

  test("REST file access holds the user to their permissions; root may do anything", async () => {
    const user = uidOf("user");
    const as = (username: string) => ({ username });
    // Root's corner of the test dir: a private file, a world-readable one, a world-writable one.
    const sys = path.join(dir, "sys");
    mkdirSync(sys);
    const secret = path.join(sys, "secret.txt");
    writeFileSync(secret, "root only", { mode: 0o600 });
    const passwd = path.join(sys, "passwd");
    writeFileSync(passwd, "root:x:0:0\n", { mode: 0o644 });
    const shared = path.join(sys, "shared.txt");
    writeFileSync(shared, "anyone may write", { mode: 0o666 });
    chmodSync(shared, 0o666);
    const status = async (res: Response) => {
      await res.arrayBuffer();
      return res.status;
    };
    const read = (file: string, query: Record<string, string> = {}) =>
      fetch(filesURL({ path: file, ...query })).then(status);
    const write = (file: string, body: string, query: Record<string, string> = {}) =>
      fetch(filesURL({ path: file, ...query }), {
        method: "POST",
        headers: { "content-type": "application/octet-stream" },
        body,
      }).then(status);

    assert.equal(await read("/etc/shadow"), 403);
    assert.equal(await read(secret), 403);
    assert.equal(await read(passwd), 200);
    assert.equal(await read(secret, as("root")), 200);
    // A symlink of the user's own leads nowhere they could not go themselves.
    symlinkSync(secret, path.join(dir, "to-secret"));
    symlinkSync(sys, path.join(dir, "to-sys"));
    chownLink(path.join(dir, "to-secret"), "user");
    chownLink(path.join(dir, "to-sys"), "user");
    assert.equal(await read(path.join(dir, "to-secret")), 403);
    assert.equal(await read(path.join(dir, "to-sys/secret.txt")), 403);

    assert.equal(await write(passwd, "user::0:0\n"), 403);
    assert.equal(await write(path.join(dir, "to-sys/passwd"), "user::0:0\n"), 403);
    assert.equal(await write(path.join(sys, "new.txt"), "x"), 403);
    assert.equal(await write(path.join(sys, "new-dir/new.txt"), "x"), 403);
    // Written in place: a hard link the user has to root's file is checked on the inode it leads to.
    const userDir = makeUserDir("/tmp/moat-test-links-");
    try {
      execFileSync("ln", [passwd, path.join(userDir, "passwd-link")]);
      assert.equal(await write(path.join(userDir, "passwd-link"), "user::0:0\n"), 403);
      symlinkSync(passwd, path.join(userDir, "passwd-symlink"));
      chownLink(path.join(userDir, "passwd-symlink"), "user");
      assert.equal(await write(path.join(userDir, "passwd-symlink"), "user::0:0\n"), 403);
    } finally {
      rmSync(userDir, { recursive: true, force: true });
    }
    assert.equal(readFileSync(passwd, "utf8"), "root:x:0:0\n");
    assert.equal(existsSync(path.join(sys, "new.txt")), false);
    assert.equal(existsSync(path.join(sys, "new-dir")), false);
    assert.deepEqual(tempFiles(sys), []);
    // A file the user may write is written, and stays its owner's.
    assert.equal(await write(shared, "written by user"), 200);
    assert.equal(readFileSync(shared, "utf8"), "written by user");
    assert.equal(statSync(shared).uid, 0);
    assert.equal(statSync(shared).mode & 0o777, 0o666);
    // Root may.
    assert.equal(await write(path.join(sys, "by-root.txt"), "x", as("root")), 200);
    assert.equal(statSync(path.join(sys, "by-root.txt")).uid, 0);

    // Compose: every source must be readable and removable by the user.
    const own = path.join(dir, "own-part");
    writeFileSync(own, "mine;");
    chownSync(own, user, gidOf("user"));
    const compose = (sources: string[], destination: string) =>
      fetch(`${ENVD_URL}/files/compose`, {
        method: "POST",
        body: JSON.stringify({ source_paths: sources, destination }),
      }).then(status);
    const out = path.join(dir, "composed-secret.txt");
    assert.equal(await compose([own, secret], out), 403);
    assert.equal(await compose([own, passwd], out), 403, "readable, but not the user's to remove");
    assert.equal(existsSync(out), false);
    assert.equal(existsSync(own), true);
    assert.equal(existsSync(passwd), true);
    assert.equal(await compose([own], path.join(sys, "composed.txt")), 403);
    assert.equal(existsSync(path.join(sys, "composed.txt")), false);
  });

  test("CORS is fully open", async () => {
    const preflight = await fetch(`${ENVD_URL}/files`, {
      method: "OPTIONS",
      headers: {
        origin: "https://example.com",
        "access-control-request-method": "POST",
        "access-control-request-headers": "x-metadata-a, content-type",
      },
    });
    assert.equal(preflight.status, 204);
    assert.equal(preflight.headers.get("access-control-allow-origin"), "*");
    assert.match(preflight.headers.get("access-control-allow-headers") ?? "", /x-metadata-a/);
    const res = await fetch(`${ENVD_URL}/health`, { headers: { origin: "https://example.com" } });
    assert.equal(res.headers.get("access-control-allow-origin"), "*");
  });
});
