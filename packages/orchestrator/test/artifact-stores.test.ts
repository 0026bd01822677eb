import assert from "node:assert/strict";
import { mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
// @ts-expect-error s3rver ships no types
import S3rver from "s3rver";
import { ArtifactChecksumError } from "../src/artifacts/checksum.js";
import { DirectoryArtifactStore } from "../src/artifacts/directory.js";
import { openArtifactStore, parseArtifactLocation } from "../src/artifacts/open.js";
import { S3ArtifactStore } from "../src/artifacts/s3.js";
import type { ArtifactStore } from "../src/artifacts/store.js";

const BUCKET = "moat-test";

interface Backend {
  store: ArtifactStore;
  /** Replaces an object's bytes behind the store's back (a corrupt or hostile shared storage). */
  tamper(key: string, content: Buffer): Promise<void>;
}

/** An S3-compatible server (s3rver) on loopback, in-process, with a temp dir. */
async function startS3(dir: string): Promise<{ endpoint: string; close: () => Promise<void> }> {
  const server = new S3rver({
    address: "127.0.0.1",
    port: 0,
    silent: true,
    directory: dir,
    configureBuckets: [{ name: BUCKET }],
  });
  const { port } = (await server.run()) as { port: number };
  return { endpoint: `http://127.0.0.1:${port}`, close: () => server.close() };
}

function s3Store(endpoint: string, prefix: string, secret?: string): S3ArtifactStore {
  return new S3ArtifactStore({
    bucket: BUCKET,
    prefix,
    forcePathStyle: true,
    secret,
    client: {
      endpoint,
      region: "us-east-1",
      credentials: { accessKeyId: "S3RVER", secretAccessKey: "S3RVER" },
    },
  });
}

function storeSuite(name: string, make: (secret?: string) => Promise<Backend>) {
  describe(`artifact store: ${name}`, () => {
    let work: string;
    let backend: Backend;
    let store: ArtifactStore;

    before(async () => {
      work = await mkdtemp(path.join(tmpdir(), "moat-artifact-store-test-"));
      backend = await make();
      store = backend.store;
    });
    after(async () => {
      await rm(work, { recursive: true, force: true });
    });

    const local = async (name: string, content: string | Buffer) => {
      const file = path.join(work, name);
      await writeFile(file, content);
      return file;
    };

    test("put, has, get, list, delete", async () => {
      await store.putFile("t/a/one.bin", await local("one", "first"));
      await store.putFile("t/a/b/two.bin", await local("two", "second"));
      await store.putFile("u/other.bin", await local("three", "third"));
      assert.equal(await store.has("t/a/one.bin"), true);
      assert.equal(await store.has("t/a/none.bin"), false);
      const out = path.join(work, "out");
      assert.equal(await store.getFile("t/a/one.bin", out), true);
      assert.equal(await readFile(out, "utf8"), "first");
      assert.equal(await store.getFile("t/a/none.bin", path.join(work, "none")), false);
      assert.deepEqual(await store.list("t/"), ["t/a/b/two.bin", "t/a/one.bin"]);
      assert.deepEqual(await store.list("nothing/"), []);
      await store.delete("t/a/one.bin");
      await store.delete("t/a/one.bin"); // absent: no error
      assert.equal(await store.has("t/a/one.bin"), false);
      assert.deepEqual(await store.list("t/"), ["t/a/b/two.bin"]);
    });

    test("a put replaces an object whole", async () => {
      await store.putFile("r/x", await local("x1", "old content"));
      await store.putFile("r/x", await local("x2", "new"));
      const out = path.join(work, "x-out");
      assert.equal(await store.getFile("r/x", out), true);
      assert.equal(await readFile(out, "utf8"), "new");
    });

    test("a big file goes up in parts and comes back the same", async () => {
      // 40 MiB: three parts of the multipart upload.
      const big = Buffer.alloc(40 * 2 ** 20);
      for (let i = 0; i < big.length; i += 4096) big.writeUInt32LE(i, i);
      await store.putFile("big/blob", await local("big", big));
      const out = path.join(work, "big-out");
      assert.equal(await store.getFile("big/blob", out), true);
      assert.ok((await readFile(out)).equals(big));
    });

    test("a download that does not match its checksum is refused and leaves no file", async () => {
      await store.putFile("c/obj", await local("c", "genuine"));
      await backend.tamper("c/obj", Buffer.from("planted"));
      const out = path.join(work, "c-out");
      await assert.rejects(store.getFile("c/obj", out), ArtifactChecksumError);
      const left = (await readdir(work)).filter((n) => n.startsWith("c-out"));
      assert.deepEqual(left, []);
    });

    test("keys with '..', absolute paths, empty segments or the store's own suffixes are refused", async () => {
      const file = await local("k", "k");
      for (const key of [
        "../escape",
        "a/../b",
        "/abs",
        "a//b",
        "",
        "a/",
        ".",
        "a/./b",
        "a b",
        "x.sha256",
        "y.partial-1",
      ]) {
        await assert.rejects(store.putFile(key, file), RangeError, key);
        await assert.rejects(store.getFile(key, path.join(work, "k-out")), RangeError, key);
      }
      await assert.rejects(store.list("../"), RangeError);
    });

    test("a partial write is never visible", async () => {
      // A put whose source fails mid-way: no object, nothing listed.
      await assert.rejects(store.putFile("p/missing", path.join(work, "does-not-exist")));
      assert.equal(await store.has("p/missing"), false);
      assert.deepEqual(await store.list("p/"), []);
    });
  });
}

let root: string;
let s3: { endpoint: string; close: () => Promise<void> };

before(async () => {
  root = await mkdtemp(path.join(tmpdir(), "moat-artifact-backends-"));
  s3 = await startS3(path.join(root, "s3rver"));
});
after(async () => {
  await s3.close();
  await rm(root, { recursive: true, force: true });
});

storeSuite("directory", async (secret) => {
  const dir = await mkdtemp(path.join(root, "dir-"));
  return {
    store: new DirectoryArtifactStore(dir, { secret }),
    tamper: (key, content) => writeFile(path.join(dir, key), content),
  };
});

storeSuite("s3 (s3rver)", async (secret) => {
  const prefix = `run-${Math.random().toString(36).slice(2)}/artifacts`;
  const store = s3Store(s3.endpoint, prefix, secret);
  return {
    store,
    tamper: async (key, content) => {
      // A raw put of other bytes that keeps the genuine checksum (copied from the object).
      const { GetObjectCommand, PutObjectCommand } = await import("@aws-sdk/client-s3");
      const got = await store.client.send(new GetObjectCommand({ Bucket: BUCKET, Key: `${prefix}/${key}` }));
      await got.Body?.transformToByteArray();
      await store.client.send(
        new PutObjectCommand({
          Bucket: BUCKET,
          Key: `${prefix}/${key}`,
          Body: content,
          Metadata: got.Metadata,
        }),
      );
    },
  };
});

describe("artifact checksums signed with the fleet's secret", () => {
  test("an object put without the secret, or with another, is refused by a node that has it", async () => {
    const dir = await mkdtemp(path.join(root, "sealed-"));
    const file = path.join(dir, "src");
    await writeFile(file, "layer bytes");
    const out = path.join(dir, "out");
    const secret = "s".repeat(40);
    await new DirectoryArtifactStore(path.join(dir), {}).putFile("k/plain", file);
    await new DirectoryArtifactStore(path.join(dir), { secret: "o".repeat(40) }).putFile("k/other", file);
    const node = new DirectoryArtifactStore(path.join(dir), { secret });
    await assert.rejects(node.getFile("k/plain", out), /not signed/);
    await assert.rejects(node.getFile("k/other", out), ArtifactChecksumError);
    await node.putFile("k/good", file);
    assert.equal(await node.getFile("k/good", out), true);
  });

  test("an object moved to another key is refused (the key is in the checksum)", async () => {
    const dir = await mkdtemp(path.join(root, "moved-"));
    const file = path.join(dir, "src");
    await writeFile(file, "team A's layer");
    const node = new DirectoryArtifactStore(dir, { secret: "s".repeat(40) });
    await node.putFile("a/layer", file);
    await writeFile(path.join(dir, "b-layer"), await readFile(path.join(dir, "a/layer")));
    await writeFile(path.join(dir, "b-layer.sha256"), await readFile(path.join(dir, "a/layer.sha256")));
    await assert.rejects(node.getFile("b-layer", path.join(dir, "out")), ArtifactChecksumError);
  });
});

describe("--artifacts locations", () => {
  test("directories and s3 URLs parse; anything else says what is accepted", async () => {
    assert.deepEqual(parseArtifactLocation("/srv/moat"), { kind: "directory", root: "/srv/moat" });
    assert.deepEqual(parseArtifactLocation("s3://my-bucket/fleet/a/"), {
      kind: "s3",
      bucket: "my-bucket",
      prefix: "fleet/a",
    });
    assert.deepEqual(parseArtifactLocation("s3://my-bucket"), {
      kind: "s3",
      bucket: "my-bucket",
      prefix: "",
    });
    assert.throws(() => parseArtifactLocation("relative/dir"), /absolute path/);
    assert.throws(() => parseArtifactLocation("s3://Bad_Bucket/x"), /bucket name/);
    assert.throws(() => parseArtifactLocation("s3://bucket/../x"), /prefix/);
    assert.throws(() => parseArtifactLocation("gs://bucket/x"), /not a supported location/);
    await assert.rejects(openArtifactStore(path.join(root, "nope")), /not a directory/);
    await assert.rejects(
      openArtifactStore("s3://bucket/x", { MOAT_S3_FORCE_PATH_STYLE: "yes" }),
      /MOAT_S3_FORCE_PATH_STYLE/,
    );
  });
});
