/**
 * A real container registry on loopback (Debian's `docker-registry`, the CNCF distribution
 * server) that tests push their own images to over the registry HTTP API, as `docker push` does.
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { once } from "node:events";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import http from "node:http";
import type { AddressInfo } from "node:net";
import path from "node:path";
import { freePort } from "./orchestrator.js";

export const sha256 = (bytes: Buffer) => `sha256:${createHash("sha256").update(bytes).digest("hex")}`;

export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
}

export interface LocalRegistry {
  /** `http://127.0.0.1:<port>` */
  readonly url: string;
  /** `127.0.0.1:<port>`, as image references name it. */
  readonly host: string;
  readonly process: ChildProcess;
  pushBlob(repo: string, bytes: Buffer): Promise<string>;
  pushManifest(repo: string, ref: string, mediaType: string, body: unknown): Promise<Descriptor>;
  /**
   * Pushes a single-platform (linux/amd64) OCI image: `layers` as compressed blobs with their
   * media types and uncompressed tars (for the config's diff ids).
   */
  pushImage(
    repo: string,
    tag: string,
    layers: Array<{ mediaType: string; blob: Buffer; tar: Buffer }>,
    config: Record<string, unknown>,
  ): Promise<Descriptor>;
  stop(): Promise<void>;
}

export async function startRegistry(): Promise<LocalRegistry> {
  const work = await mkdtemp("/tmp/moat-test-registry-");
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  await writeFile(
    path.join(work, "config.yml"),
    `version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: ${work}/data\nhttp:\n  addr: 127.0.0.1:${port}\n`,
  );
  const child: ChildProcess = spawn("docker-registry", ["serve", path.join(work, "config.yml")], {
    stdio: "ignore",
  });
  for (let i = 0; ; i++) {
    const ok = await fetch(`${url}/v2/`).then(
      (r) => r.ok,
      () => false,
    );
    if (ok) break;
    if (i > 100) throw new Error("docker-registry did not start");
    await new Promise((r) => setTimeout(r, 100));
  }

  const pushBlob = async (repo: string, bytes: Buffer): Promise<string> => {
    const digest = sha256(bytes);
    const start = await fetch(`${url}/v2/${repo}/blobs/uploads/`, { method: "POST" });
    assert.equal(start.status, 202);
    const location = new URL(start.headers.get("location")!, url);
    location.searchParams.set("digest", digest);
    const put = await fetch(location, {
      method: "PUT",
      body: bytes,
      headers: { "content-type": "application/octet-stream" },
    });
    assert.equal(put.status, 201, await put.text());
    return digest;
  };

  const pushManifest = async (repo: string, ref: string, mediaType: string, body: unknown) => {
    const bytes = Buffer.from(JSON.stringify(body));
    const res = await fetch(`${url}/v2/${repo}/manifests/${ref}`, {
      method: "PUT",
      body: bytes,
      headers: { "content-type": mediaType },
    });
    assert.equal(res.status, 201, await res.text());
    return { mediaType, digest: sha256(bytes), size: bytes.length };
  };

  return {
    url,
    host: `127.0.0.1:${port}`,
    process: child,
    pushBlob,
    pushManifest,
    async pushImage(repo, tag, layers, config) {
      const descriptors: Descriptor[] = [];
      for (const layer of layers) {
        descriptors.push({
          mediaType: layer.mediaType,
          digest: await pushBlob(repo, layer.blob),
          size: layer.blob.length,
        });
      }
      const configBytes = Buffer.from(
        JSON.stringify({
          architecture: "amd64",
          os: "linux",
          ...config,
          rootfs: { type: "layers", diff_ids: layers.map((l) => sha256(l.tar)) },
        }),
      );
      const mediaType = "application/vnd.oci.image.manifest.v1+json";
      return pushManifest(repo, tag, mediaType, {
        schemaVersion: 2,
        mediaType,
        config: {
          mediaType: "application/vnd.oci.image.config.v1+json",
          digest: await pushBlob(repo, configBytes),
          size: configBytes.length,
        },
        layers: descriptors,
      });
    },
    async stop() {
      child.kill("SIGTERM");
      await rm(work, { recursive: true, force: true });
    },
  };
}

/**
 * `registry` behind Bearer-token auth, as Docker Hub and most registries are: a 401 with a
 * `WWW-Authenticate` challenge, a token service that wants `creds` as Basic auth, and the token.
 */
export async function startTokenAuth(
  registry: LocalRegistry,
  creds: { username: string; password: string },
  repo: string,
): Promise<{ host: string; close(): void }> {
  const basic = `Basic ${Buffer.from(`${creds.username}:${creds.password}`).toString("base64")}`;
  const server = http.createServer(async (req, res) => {
    const self = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    if (req.url?.startsWith("/token")) {
      const ok = req.headers.authorization === basic;
      res.writeHead(ok ? 200 : 401, { "content-type": "application/json" });
      res.end(JSON.stringify(ok ? { token: "t0ken" } : { errors: [{ code: "UNAUTHORIZED" }] }));
      return;
    }
    if (req.headers.authorization !== "Bearer t0ken") {
      res.writeHead(401, {
        "www-authenticate": `Bearer realm="${self}/token",service="test",scope="repository:${repo}:pull"`,
      });
      res.end();
      return;
    }
    const upstream = await fetch(`${registry.url}${req.url}`, {
      headers: { accept: req.headers.accept ?? "*/*" },
    });
    res.writeHead(upstream.status, { "content-type": upstream.headers.get("content-type") ?? "" });
    res.end(Buffer.from(await upstream.arrayBuffer()));
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  return { host: `127.0.0.1:${(server.address() as AddressInfo).port}`, close: () => server.close() };
}
