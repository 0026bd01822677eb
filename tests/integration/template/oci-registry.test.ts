/**
 * Pulling OCI images over the registry HTTP API from a real registry (Debian's docker-registry on
 * loopback), with an image this test builds and pushes itself: an index with two platforms, a gzip
 * and a zstd layer, whiteouts and an opaque directory, and a registry behind Bearer-token auth.
 */
import assert from "node:assert/strict";
import { type ChildProcess, execFileSync } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { gzipSync } from "node:zlib";
import {
  applyLayers,
  MEDIA_TYPES,
  parseImageReference,
  RegistryClient,
  RegistryError,
} from "@moat/orchestrator";
import * as tar from "tar";
import { type LocalRegistry, sha256, startRegistry, startTokenAuth } from "../helpers/registry.js";

/** A tar of `files` (path → content; content null makes a directory). */
async function layerTar(root: string, files: Record<string, string | null>): Promise<Buffer> {
  const dir = await mkdtemp(path.join(root, "layer-"));
  for (const [name, content] of Object.entries(files)) {
    const target = path.join(dir, name);
    if (content === null) await mkdir(target, { recursive: true });
    else {
      await mkdir(path.dirname(target), { recursive: true });
      await writeFile(target, content);
    }
  }
  const chunks: Buffer[] = [];
  const stream = tar.c({ cwd: dir, portable: true }, await readdir(dir));
  for await (const chunk of stream) chunks.push(Buffer.from(chunk as Buffer));
  return Buffer.concat(chunks);
}

/** The test's registries are on loopback, which pulls refuse unless the operator allows it. */
const allow = ["127.0.0.1"];

describe("OCI images from a registry", { timeout: 120_000 }, () => {
  let work: string;
  let registry: ChildProcess;
  let base: string;
  let authFront: { host: string; close(): void };
  let authRegistry: string;

  let local: LocalRegistry;

  before(async () => {
    work = await mkdtemp("/tmp/moat-test-oci-");
    local = await startRegistry();
    base = local.url;
    registry = local.process;
    const { pushBlob, pushManifest } = local;

    // The image: two layers (gzip below, zstd above with whiteouts) for linux/amd64, and an
    // arm64 image in the same index that must not be chosen.
    const lower = await layerTar(work, {
      "etc/greeting": "hello\n",
      "opt/keep/a": "a",
      "opt/gone/b": "b",
      "var/old/x": "x",
      "var/old/y": "y",
    });
    const upper = await layerTar(work, {
      "etc/greeting": "hi\n",
      "opt/.wh.gone": "",
      "var/old/.wh..wh..opq": "",
      "var/old/z": "z",
    });
    const lowerBlob = gzipSync(lower);
    const upperBlob = execFileSync("zstd", ["-q", "-c"], { input: upper });
    const repo = "moat/img";
    const layers = [
      {
        mediaType: "application/vnd.oci.image.layer.v1.tar+gzip",
        digest: await pushBlob(repo, lowerBlob),
        size: lowerBlob.length,
      },
      {
        mediaType: "application/vnd.oci.image.layer.v1.tar+zstd",
        digest: await pushBlob(repo, upperBlob),
        size: upperBlob.length,
      },
    ];
    const image = (architecture: string, diffIDs: string[]) =>
      Buffer.from(
        JSON.stringify({
          architecture,
          os: "linux",
          config: { Env: ["PATH=/usr/bin:/bin", "A=1"], Cmd: ["/bin/sh"], WorkingDir: "/opt" },
          rootfs: { type: "layers", diff_ids: diffIDs },
        }),
      );
    const amd64Config = image("amd64", [sha256(lower), sha256(upper)]);
    const arm64Config = image("arm64", [sha256(lower)]);
    const manifest = (config: Buffer, configDigest: string, l: typeof layers) => ({
      schemaVersion: 2,
      mediaType: MEDIA_TYPES.ociManifest,
      config: {
        mediaType: "application/vnd.oci.image.config.v1+json",
        digest: configDigest,
        size: config.length,
      },
      layers: l,
    });
    const amd64 = await pushManifest(
      repo,
      "amd64",
      MEDIA_TYPES.ociManifest,
      manifest(amd64Config, await pushBlob(repo, amd64Config), layers),
    );
    const arm64 = await pushManifest(
      repo,
      "arm64",
      MEDIA_TYPES.ociManifest,
      manifest(arm64Config, await pushBlob(repo, arm64Config), layers.slice(0, 1)),
    );
    await pushManifest(repo, "v1", MEDIA_TYPES.ociIndex, {
      schemaVersion: 2,
      mediaType: MEDIA_TYPES.ociIndex,
      manifests: [
        { ...arm64, platform: { os: "linux", architecture: "arm64" } },
        { ...amd64, platform: { os: "linux", architecture: "amd64" } },
      ],
    });

    // The same registry behind Bearer-token auth, as Docker Hub and most registries are.
    authFront = await startTokenAuth(local, { username: "alice", password: "secret" }, "moat/img");
    authRegistry = authFront.host;
  });

  after(async () => {
    await local?.stop();
    authFront?.close();
    await rm(work, { recursive: true, force: true });
  });

  test("pulls the linux/amd64 image of an index and applies gzip and zstd layers with whiteouts", async () => {
    const client = new RegistryClient({ cacheDir: path.join(work, "cache"), allow });
    const pulled = await client.pull(parseImageReference(`${base.slice(7)}/moat/img:v1`));
    assert.equal(pulled.config.architecture, "amd64");
    assert.deepEqual(pulled.config.config?.Env, ["PATH=/usr/bin:/bin", "A=1"]);
    assert.equal(pulled.layers.length, 2);
    const rootfs = await mkdtemp(path.join(work, "rootfs-"));
    await applyLayers(pulled.layers, rootfs);
    assert.equal(await readFile(path.join(rootfs, "etc/greeting"), "utf8"), "hi\n");
    assert.equal(await readFile(path.join(rootfs, "opt/keep/a"), "utf8"), "a");
    assert.ok(!existsSync(path.join(rootfs, "opt/gone")), "a whiteout deletes from the layer below");
    assert.deepEqual(
      await readdir(path.join(rootfs, "var/old")),
      ["z"],
      "an opaque directory drops what was below",
    );
    assert.ok(!existsSync(path.join(rootfs, "opt/.wh.gone")), "whiteout markers are not files of the image");
  });

  test("a corrupt layer fails the apply instead of leaving a silently short tree", async () => {
    const blob = path.join(work, "corrupt.zst");
    const good = execFileSync("zstd", ["-q", "-c"], {
      input: await layerTar(work, { "f/one": "1".repeat(100_000) }),
    });
    await writeFile(blob, good.subarray(0, Math.floor(good.length / 2)));
    const rootfs = await mkdtemp(path.join(work, "rootfs-"));
    await assert.rejects(
      applyLayers([{ path: blob }], rootfs),
      /zstd could not decompress|TAR_BAD_ARCHIVE|unexpected end/i,
    );
  });

  test("blobs come from the cache the second time; a bad name or tag is a clear error", async () => {
    const cacheDir = path.join(work, "cache2");
    const client = new RegistryClient({ cacheDir, allow });
    const ref = parseImageReference(`${base.slice(7)}/moat/img:v1`);
    const first = await client.pull(ref);
    registry.kill("SIGSTOP");
    try {
      // Blobs are cached; only manifests need the registry, so they fail while it is stopped.
      const again = client.blob(ref, { ...first.layers[0]!, mediaType: "" });
      assert.equal(await again, first.layers[0]!.path);
    } finally {
      registry.kill("SIGCONT");
    }
    await assert.rejects(
      client.pull(parseImageReference(`${base.slice(7)}/moat/img:nope`)),
      (err: unknown) =>
        err instanceof RegistryError && /404.*check the image name and tag/s.test(err.message),
    );
    await assert.rejects(
      new RegistryClient({ cacheDir, allow, platform: { os: "linux", architecture: "s390x" } }).pull(ref),
      /has no linux\/s390x image \(it has: linux\/arm64, linux\/amd64\)/,
    );
  });

  test("a registry behind Bearer auth: credentials get a token; wrong ones a clear error", async () => {
    const ref = parseImageReference(`${authRegistry}/moat/img:v1`);
    const good = new RegistryClient({
      cacheDir: path.join(work, "cache3"),
      allow,
      credentials: () => ({ username: "alice", password: "secret" }),
    });
    assert.equal((await good.pull(ref)).layers.length, 2);
    const bad = new RegistryClient({
      cacheDir: path.join(work, "cache4"),
      allow,
      credentials: () => ({ username: "alice", password: "wrong" }),
    });
    await assert.rejects(bad.pull(ref), /pull token .* 401.*check the registry credentials/s);
  });
});
