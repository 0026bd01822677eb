import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdtemp, open, rm, truncate, writeFile } from "node:fs/promises";
import type { IncomingMessage } from "node:http";
import { tmpdir } from "node:os";
import path from "node:path";
import { Readable } from "node:stream";
import { describe, test } from "node:test";
import { gzipSync } from "node:zlib";
import { decodedBody, isDecompressionError } from "../src/http/body.js";
import { negotiateEncoding } from "../src/http/encoding.js";
import { HTTPError } from "../src/http/errors.js";
import { contentDisposition, fileBody } from "../src/http/files-download.js";
import { clockBehind, parseInitRequest } from "../src/http/init.js";
import { parseRange } from "../src/http/range.js";
import { MAX_METADATA_KEY_BYTES, metadataFromHeaders } from "../src/http/upload-metadata.js";

function httpStatus(status: number) {
  return (err: unknown) => err instanceof HTTPError && err.status === status;
}

describe("parseRange", () => {
  test("no header or another unit serves the whole file", () => {
    assert.deepEqual(parseRange(undefined, 100), { kind: "full" });
    assert.deepEqual(parseRange("items=0-1", 100), { kind: "full" });
  });
  test("closed, open-ended and suffix ranges", () => {
    assert.deepEqual(parseRange("bytes=0-9", 100), { kind: "partial", start: 0, end: 9 });
    assert.deepEqual(parseRange("bytes=90-", 100), { kind: "partial", start: 90, end: 99 });
    assert.deepEqual(parseRange("bytes=-10", 100), { kind: "partial", start: 90, end: 99 });
    assert.deepEqual(parseRange("bytes=-500", 100), { kind: "partial", start: 0, end: 99 });
    assert.deepEqual(parseRange("bytes=50-5000", 100), { kind: "partial", start: 50, end: 99 });
  });
  test("a range past the end is unsatisfiable", () => {
    assert.deepEqual(parseRange("bytes=100-", 100), { kind: "unsatisfiable" });
    assert.deepEqual(parseRange("bytes=-0", 100), { kind: "unsatisfiable" });
    assert.deepEqual(parseRange("bytes=0-0", 0), { kind: "unsatisfiable" });
  });
  test("malformed and multi-range headers are ignored", () => {
    assert.deepEqual(parseRange("bytes=9-1", 100), { kind: "full" });
    assert.deepEqual(parseRange("bytes=a-b", 100), { kind: "full" });
    assert.deepEqual(parseRange("bytes=0-1,5-6", 100), { kind: "full" });
    assert.deepEqual(parseRange("bytes=99999999999999999999-", 100), { kind: "full" });
  });
});

describe("negotiateEncoding", () => {
  test("gzip only when the client singles it out", () => {
    assert.equal(negotiateEncoding(undefined), "identity");
    assert.equal(negotiateEncoding("gzip"), "gzip");
    assert.equal(negotiateEncoding("GZIP"), "gzip");
    assert.equal(negotiateEncoding("gzip, identity;q=0.5"), "gzip");
    // Node's fetch sends this on every request by itself.
    assert.equal(negotiateEncoding("gzip, deflate"), "identity");
    assert.equal(negotiateEncoding("gzip;q=0.5"), "identity");
    assert.equal(negotiateEncoding("br"), "identity");
    assert.equal(negotiateEncoding("*"), "identity");
  });
  test("refusing identity forces gzip, or 406 when gzip is refused too", () => {
    assert.equal(negotiateEncoding("gzip, deflate, identity;q=0"), "gzip");
    assert.equal(negotiateEncoding("*;q=0, gzip"), "gzip");
    assert.throws(() => negotiateEncoding("identity;q=0"), httpStatus(406));
    assert.throws(() => negotiateEncoding("br, *;q=0"), httpStatus(406));
  });
});

describe("metadataFromHeaders", () => {
  test("takes X-Metadata-* headers, lower-cases keys, keeps the first value", () => {
    const md = metadataFromHeaders({
      "x-metadata-author": ["me", "you"],
      "X-Metadata-Purpose": ["test"],
      "x-metadata-": ["dropped"],
      "content-type": ["text/plain"],
    });
    assert.deepEqual(md, { author: "me", purpose: "test" });
  });
  test("refuses non-printable values, long keys and oversize totals", () => {
    assert.throws(() => metadataFromHeaders({ "x-metadata-k": ["caf\u00e9"] }), httpStatus(400));
    const longKey = `x-metadata-${"k".repeat(MAX_METADATA_KEY_BYTES + 1)}`;
    assert.throws(() => metadataFromHeaders({ [longKey]: ["v"] }), httpStatus(400));
    const many: Record<string, string[]> = {};
    for (let i = 0; i < 5; i++) many[`x-metadata-k${i}`] = ["v".repeat(1000)];
    assert.throws(() => metadataFromHeaders(many), httpStatus(400));
  });
});

describe("contentDisposition", () => {
  test("plain names are quoted, others get an RFC 8187 filename*", () => {
    assert.equal(contentDisposition("a.txt"), 'inline; filename="a.txt"');
    assert.equal(
      contentDisposition('ñ "x".txt'),
      `inline; filename="_ _x_.txt"; filename*=UTF-8''%C3%B1%20%22x%22.txt`,
    );
  });
});

describe("parseInitRequest", () => {
  test("accepts an empty body and ignores nulls and unknown fields", () => {
    assert.deepEqual(parseInitRequest(undefined), {});
    assert.deepEqual(parseInitRequest({ accessToken: null, other: 1, hyperloopIP: "10.0.0.1" }), {});
  });
  test("parses every known field", () => {
    const parsed = parseInitRequest({
      envVars: { A: "1" },
      accessToken: "t",
      timestamp: "2025-01-01T00:00:00Z",
      defaultUser: "user",
      defaultWorkdir: "/work",
      volumeMounts: [{ nfs_target: "x", path: "/mnt" }],
    });
    assert.deepEqual(parsed.envVars, { A: "1" });
    assert.equal(parsed.accessToken, "t");
    assert.equal(parsed.timestamp?.toISOString(), "2025-01-01T00:00:00.000Z");
    assert.equal(parsed.defaultUser, "user");
    assert.equal(parsed.defaultWorkdir, "/work");
  });
  test("wrong types are 400", () => {
    for (const body of [
      [],
      "x",
      { envVars: [] },
      { envVars: { A: 1 } },
      { accessToken: 5 },
      { timestamp: "yesterday" },
      { defaultUser: true },
      { defaultWorkdir: "relative" },
      { volumeMounts: [{ path: 1 }] },
    ]) {
      assert.throws(() => parseInitRequest(body), httpStatus(400), JSON.stringify(body));
    }
  });
  test("a hostname is one DNS label: nothing that could carry a second line to the hostname helper", () => {
    assert.equal(parseInitRequest({ hostname: "abc123-x" }).hostname, "abc123-x");
    for (const hostname of ["a\nb", "a\n", "a\0b", "a b", "-a", "A", "a.b", "", "a".repeat(64), "$(id)"]) {
      assert.throws(() => parseInitRequest({ hostname }), httpStatus(400), JSON.stringify(hostname));
    }
  });
});

describe("clockBehind", () => {
  test("/init's timestamp moves the clock forward only", () => {
    const now = Date.parse("2026-01-01T00:00:00Z");
    assert.equal(clockBehind(now, now + 60_000), true);
    assert.equal(clockBehind(now, now + 500), false, "within a second: left alone");
    assert.equal(clockBehind(now, now - 60_000), false, "never back");
    assert.equal(clockBehind(now, Date.parse("2001-01-01T00:00:00Z")), false);
  });
});

describe("decodedBody", () => {
  /** A request-like stream carrying `body` with these headers. */
  function request(body: Buffer, headers: Record<string, string>): IncomingMessage {
    const stream = Readable.from([body]) as unknown as IncomingMessage;
    return Object.assign(stream, { headers });
  }
  async function drain(stream: Readable): Promise<number> {
    let size = 0;
    for await (const chunk of stream) size += (chunk as Buffer).length;
    return size;
  }

  test("gunzips, and passes other bodies through", async () => {
    const text = Buffer.from("line of text\n".repeat(10_000));
    const gz = decodedBody(request(gzipSync(text), { "content-encoding": "gzip" }));
    assert.equal(await drain(gz.stream), text.length);
    const plain = decodedBody(request(text, {}));
    assert.equal(await drain(plain.stream), text.length);
  });
  test("a body that expands past the ratio fails with 413", async () => {
    const bomb = gzipSync(Buffer.alloc(70 * 1024 * 1024));
    const body = decodedBody(request(bomb, { "content-encoding": "gzip" }));
    await assert.rejects(drain(body.stream), httpStatus(413));
    body.dispose();
  });
  test("corrupt gzip fails with zlib's error; other encodings are 415", async () => {
    const corrupt = Buffer.concat([
      gzipSync(Buffer.alloc(10_000, 1)).subarray(0, 30),
      Buffer.from("garbage"),
    ]);
    const body = decodedBody(request(corrupt, { "content-encoding": "gzip" }));
    await assert.rejects(drain(body.stream), (err: unknown) => isDecompressionError(err));
    assert.throws(
      () => decodedBody(request(Buffer.from("x"), { "content-encoding": "br" })),
      httpStatus(415),
    );
  });
});

describe("fileBody", () => {
  const withFile = async (content: Buffer, fn: (file: string) => Promise<void>) => {
    const dir = await mkdtemp(path.join(tmpdir(), "moat-filebody-"));
    try {
      const file = path.join(dir, "f.bin");
      await writeFile(file, content);
      await fn(file);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  };
  const readAll = async (stream: ReadableStream<Uint8Array>) => {
    const chunks: Buffer[] = [];
    for await (const chunk of stream) chunks.push(Buffer.from(chunk));
    return Buffer.concat(chunks);
  };
  /** Whether `handle` is closed: a closed FileHandle's stat rejects. */
  const isClosed = (handle: Awaited<ReturnType<typeof open>>) =>
    handle.stat().then(
      () => false,
      () => true,
    );

  test("the whole file, or a range, in chunks of their own; the handle is closed at the end", async () => {
    const content = randomBytes(3 * 1024 * 1024 + 17);
    await withFile(content, async (file) => {
      const whole = await open(file);
      assert.ok((await readAll(fileBody(whole, 0))).equals(content));
      assert.equal(await isClosed(whole), true);
      const ranged = await open(file);
      const body = await readAll(fileBody(ranged, 1000, 2 * 1024 * 1024));
      assert.ok(body.equals(content.subarray(1000, 1000 + 2 * 1024 * 1024)));
      assert.equal(await isClosed(ranged), true);
    });
  });

  test("a range the file no longer holds fails the stream instead of ending it short", async () => {
    const content = randomBytes(2 * 1024 * 1024);
    await withFile(content, async (file) => {
      const handle = await open(file);
      const stream = fileBody(handle, 0, content.length);
      await truncate(file, 1024 * 1024 + 5);
      await assert.rejects(readAll(stream), /the file shrank while it was read \(1048581 of 2097152 bytes\)/);
      assert.equal(await isClosed(handle), true);
    });
  });

  test("a client that goes away closes the handle", async () => {
    await withFile(randomBytes(4 * 1024 * 1024), async (file) => {
      const handle = await open(file);
      const reader = fileBody(handle, 0).getReader();
      await reader.read();
      await reader.cancel();
      assert.equal(await isClosed(handle), true);
    });
  });
});
