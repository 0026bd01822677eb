/**
 * A hostile image registry against `moat up`, driven as a tenant would: the unmodified e2b SDK's
 * `Template().fromImage(...)` pointed at a registry this test serves on loopback (which the node's
 * operator allows explicitly, MOAT_REGISTRY_ALLOW) with crafted images. Layers that reach out of
 * their rootfs (a `..` symlink and entries through it, `../` and absolute names, a whiteout of
 * `..`, hard links to host paths, symlink chains to `/`) fail the build with an error naming the
 * entry and its layer, or land inside the image; nothing outside the rootfs is written or deleted
 * (canary files the test owns, the data directory's parent). Oversized manifests and blobs, and a
 * layer that unpacks past the node's limit, fail cleanly. Pulls refuse loopback registries the
 * operator did not allow, redirects to loopback addresses, and never give the user's credentials
 * to a token service on another host. The node keeps serving throughout: a normal build and a
 * sandbox from it work at the end.
 */
import assert from "node:assert/strict";
import { execFile, execFileSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { once } from "node:events";
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import http from "node:http";
import net from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { promisify } from "node:util";
import { gzipSync } from "node:zlib";
import { findBaseTemplate, layerSandboxArgs } from "@moat/orchestrator";
import { Sandbox, Template } from "e2b";
import { type RawEntry, rawTar } from "../../../packages/orchestrator/test/raw-tar.js";
import { type RunningMoat, startMoat, useMoat } from "../helpers/moat-up.js";
import { CACHE_DIR } from "../helpers/orchestrator.js";

const execFileAsync = promisify(execFile);
const sha256 = (bytes: Buffer) => `sha256:${createHash("sha256").update(bytes).digest("hex")}`;
const OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json";
/** The node's image limit in this test: the Debian image fits, the decompression bomb does not. */
const IMAGE_MAX_MB = 512;

type Handler = (req: http.IncomingMessage, res: http.ServerResponse) => void;

/**
 * A registry serving whatever the test puts in it (the distribution API's GET routes), recording
 * each request's path and Authorization header. Paths in `routes` answer as their handler says.
 */
class FakeRegistry {
  readonly requests: Array<{ url: string; authorization?: string }> = [];
  readonly routes = new Map<string, Handler>();
  private readonly manifests = new Map<string, Buffer>();
  private readonly blobs = new Map<string, Buffer>();
  private server!: http.Server;
  port = 0;

  constructor(readonly address = "127.0.0.1") {}

  get host(): string {
    return `${this.address}:${this.port}`;
  }

  async start(): Promise<this> {
    this.server = http.createServer((req, res) => {
      const url = req.url ?? "";
      this.requests.push({ url, authorization: req.headers.authorization });
      const route = this.routes.get(url.split("?")[0]!);
      if (route) return route(req, res);
      const manifest = /^\/v2\/(.+)\/manifests\/([^/]+)$/.exec(url);
      const blob = /^\/v2\/(.+)\/blobs\/([^/]+)$/.exec(url);
      const body = manifest
        ? this.manifests.get(`${manifest[1]}:${manifest[2]}`)
        : blob
          ? this.blobs.get(blob[2]!)
          : url === "/v2/"
            ? Buffer.from("{}")
            : undefined;
      if (!body) {
        res.writeHead(404, { "content-type": "application/json" });
        res.end(JSON.stringify({ errors: [{ code: "NOT_FOUND", message: "not here" }] }));
        return;
      }
      res.writeHead(200, { "content-type": manifest ? OCI_MANIFEST : "application/octet-stream" });
      res.end(body);
    });
    this.server.listen(0, this.address);
    await once(this.server, "listening");
    this.port = (this.server.address() as net.AddressInfo).port;
    return this;
  }

  blob(bytes: Buffer): { mediaType: string; digest: string; size: number } {
    const digest = sha256(bytes);
    this.blobs.set(digest, bytes);
    const mediaType =
      bytes[0] === 0x1f && bytes[1] === 0x8b
        ? "application/vnd.oci.image.layer.v1.tar+gzip"
        : bytes.readUInt32LE(0) === 0xfd2fb528
          ? "application/vnd.oci.image.layer.v1.tar+zstd"
          : "application/vnd.oci.image.layer.v1.tar";
    return { mediaType, digest, size: bytes.length };
  }

  /** An image of `layers` (compressed or plain tars) under `repo:tag`; answers its manifest. */
  image(repo: string, tag: string, layers: Buffer[], config: Record<string, unknown> = {}): Buffer {
    const configBytes = Buffer.from(JSON.stringify({ architecture: "amd64", os: "linux", config }));
    const manifest = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: OCI_MANIFEST,
        config: { ...this.blob(configBytes), mediaType: "application/vnd.oci.image.config.v1+json" },
        layers: layers.map((l) => this.blob(l)),
      }),
    );
    this.manifests.set(`${repo}:${tag}`, manifest);
    return manifest;
  }

  /** A manifest as given (sizes and all), and its config. */
  rawManifest(repo: string, tag: string, body: Buffer): void {
    this.manifests.set(`${repo}:${tag}`, body);
  }

  configDescriptor(): { mediaType: string; digest: string; size: number } {
    const configBytes = Buffer.from(JSON.stringify({ architecture: "amd64", os: "linux" }));
    return { ...this.blob(configBytes), mediaType: "application/vnd.oci.image.config.v1+json" };
  }

  close(): void {
    this.server?.close();
    this.server?.closeAllConnections();
  }
}

/** A TCP listener counting the connections made to it (it answers none). */
async function canaryListener(address: string): Promise<{ port: number; hits: () => number; close(): void }> {
  let hits = 0;
  const server = net.createServer((socket) => {
    hits++;
    socket.destroy();
  });
  server.listen(0, address);
  await once(server, "listening");
  return { port: (server.address() as net.AddressInfo).port, hits: () => hits, close: () => server.close() };
}

describe("hostile image registries and layers", { timeout: 1_200_000 }, () => {
  let moat: RunningMoat;
  let registry: FakeRegistry;
  /** A second loopback host, allowed too: another host as far as credentials go. */
  let other: FakeRegistry;
  let canaries: string;
  /** What /tmp (the data directory's parent) held before. */
  let tmpBefore: string[];
  const token = randomBytes(4).toString("hex");
  const pwned = (n: number) => `moat-pwned-${token}-${n}`;
  let n = 0;

  before(async () => {
    canaries = await mkdtemp(path.join(tmpdir(), "moat-test-canaries-"));
    await writeFile(path.join(canaries, "canary"), "canary");
    registry = await new FakeRegistry("127.0.0.1").start();
    other = await new FakeRegistry("127.0.0.2").start();
    moat = await startMoat({
      env: { MOAT_REGISTRY_ALLOW: "127.0.0.1,127.0.0.2", MOAT_IMAGE_MAX_MB: String(IMAGE_MAX_MB) },
    });
    useMoat(moat);
    tmpBefore = await readdir(path.dirname(moat.dataDir));
  });

  after(async () => {
    await moat?.cleanup();
    registry?.close();
    other?.close();
    await rm(canaries, { recursive: true, force: true });
  });

  /** Nothing outside the rootfs written or deleted, and the node still up. */
  async function assertContained(): Promise<void> {
    assert.deepEqual(
      await readdir(canaries),
      ["canary"],
      "nothing written to or deleted from the canary dir",
    );
    assert.equal(await readFile(path.join(canaries, "canary"), "utf8"), "canary");
    const tmpNow = await readdir(path.dirname(moat.dataDir));
    assert.deepEqual(
      tmpNow.filter((name) => name.includes(token)),
      [],
      "nothing written to the data directory's parent",
    );
    assert.deepEqual(
      tmpBefore.filter((name) => !tmpNow.includes(name) && name.startsWith("moat-test-")),
      [],
      "nothing deleted from the data directory's parent",
    );
    assert.ok(existsSync(path.join(moat.dataDir, "templates")), "the data directory is whole");
    assert.equal(moat.child.exitCode, null, `moat up is still running:\n${moat.log().slice(-3000)}`);
  }

  /** Builds `image` (pulled from the test's registry) and expects the build to fail with `message`. */
  async function expectBuildFailure(
    image: string,
    message: RegExp,
    creds?: { username: string; password: string },
    apiKey?: string,
  ) {
    const logs: string[] = [];
    const alias = `hostile-${token}-${++n}`;
    const error = await Template.build(Template().fromImage(image, creds as never), alias, {
      apiKey,
      cpuCount: 1,
      memoryMB: 512,
      onBuildLogs: (entry: { message: string }) => logs.push(entry.message),
    }).then(
      () => undefined,
      (err: Error) => err,
    );
    // Containment first: what a hostile build did outside matters more than how it failed.
    await assertContained();
    assert.ok(error, `the build succeeded:\n${logs.join("\n")}`);
    assert.match(error.message, message, `build log:\n${logs.join("\n")}`);
    return logs;
  }

  /** An image of one layer holding `entries`, gzip-compressed. */
  const hostileImage = (name: string, ...layers: RawEntry[][]) => {
    registry.image(
      "evil/layers",
      name,
      layers.map((entries) => gzipSync(rawTar(entries))),
    );
    return `${registry.host}/evil/layers:${name}`;
  };
  const layerOf = (name: string) =>
    new RegExp(`layers of .*evil/layers:${name} failed: layer sha256:[0-9a-f]{12}`);

  test("a symlink named `..` and entries through it fail the build naming the entry", async () => {
    const image = hostileImage("dotdot", [
      { path: "..", type: "SymbolicLink", linkpath: canaries },
      { path: `../${pwned(1)}`, data: "x" },
      { path: "../canary", data: "overwritten" },
    ]);
    await expectBuildFailure(
      image,
      new RegExp(`${layerOf("dotdot").source}.*entry '\\.\\.' has a '\\.\\.' component`),
    );
  });

  test("names with `../` and absolute names fail the build naming the entry", async () => {
    await expectBuildFailure(
      hostileImage("dotdot-path", [
        { path: "etc/hello", data: "fine" },
        { path: `../../../../../../..${canaries}/${pwned(2)}`, data: "x" },
      ]),
      /entry '\.\.\/\.\.\/.*' has a '\.\.' component/,
    );
    await expectBuildFailure(
      hostileImage("absolute", [{ path: `${canaries}/${pwned(3)}`, data: "x" }]),
      new RegExp(`${layerOf("absolute").source}.*entry '${canaries}/${pwned(3)}' is an absolute path`),
    );
  });

  test("a whiteout of `..` fails the build and deletes nothing", async () => {
    await expectBuildFailure(
      hostileImage("whiteout", [{ path: "etc/x", data: "x" }], [{ path: ".wh...", data: "" }]),
      /whiteout '\.wh\.\.\.' names no file of its directory/,
    );
  });

  test("hard links to host paths fail the build; the node keeps serving", async () => {
    await expectBuildFailure(
      hostileImage("hardlink-abs", [{ path: "stolen", type: "Link", linkpath: `${canaries}/canary` }]),
      /hard link 'stolen' to '.*canary' is an absolute path/,
    );
    // Through a link to the host: resolved inside the rootfs, where there is no such file.
    await expectBuildFailure(
      hostileImage("hardlink-via-symlink", [
        { path: "h", type: "SymbolicLink", linkpath: canaries },
        { path: "stolen", type: "Link", linkpath: "h/canary" },
      ]),
      /hard link 'stolen' to 'h\/canary': no such file in the image/,
    );
  });

  test("a blob larger than its descriptor is cut off at the declared size", async () => {
    const declared = 1024;
    const huge = 64 * 2 ** 20;
    let sent = 0;
    const fake = registry.blob(randomBytes(declared));
    registry.routes.set(`/v2/evil/big/blobs/${fake.digest}`, (_req, res) => {
      res.writeHead(200, { "content-type": "application/octet-stream" });
      const chunk = Buffer.alloc(64 * 1024, 7);
      const pump = () => {
        while (sent < huge) {
          sent += chunk.length;
          if (!res.write(chunk)) return void res.once("drain", pump);
        }
        res.end();
      };
      res.on("close", () => undefined);
      pump();
    });
    registry.rawManifest(
      "evil/big",
      "v1",
      Buffer.from(
        JSON.stringify({
          schemaVersion: 2,
          mediaType: OCI_MANIFEST,
          config: registry.configDescriptor(),
          layers: [fake],
        }),
      ),
    );
    await expectBuildFailure(
      `${registry.host}/evil/big:v1`,
      /is larger than the 1024 bytes its manifest says/,
    );
    assert.ok(sent < 16 * 2 ** 20, `the download stopped early (the registry sent ${sent} bytes)`);
  });

  test("an oversized manifest, an image past the size limit and a decompression bomb fail cleanly", async () => {
    const padded = Buffer.concat([
      Buffer.from(
        JSON.stringify({
          schemaVersion: 2,
          mediaType: OCI_MANIFEST,
          config: registry.configDescriptor(),
          layers: [],
        }),
      ),
      Buffer.alloc(5 * 2 ** 20, " "),
    ]);
    registry.rawManifest("evil/manifest", "v1", padded);
    await expectBuildFailure(
      `${registry.host}/evil/manifest:v1`,
      /manifest 'v1' of .* is .*more than the 4194304 bytes allowed/,
    );

    registry.rawManifest(
      "evil/huge",
      "v1",
      Buffer.from(
        JSON.stringify({
          schemaVersion: 2,
          mediaType: OCI_MANIFEST,
          config: registry.configDescriptor(),
          layers: [
            {
              mediaType: "application/vnd.oci.image.layer.v1.tar+gzip",
              digest: sha256(Buffer.from("never")),
              size: 600 * 2 ** 20,
            },
          ],
        }),
      ),
    );
    await expectBuildFailure(
      `${registry.host}/evil/huge:v1`,
      new RegExp(`more than this node's limit of ${IMAGE_MAX_MB} MiB`),
    );

    // A few kB of zstd that unpack to more than the limit.
    const header = rawTar([{ path: "zeros", data: "" }]).subarray(0, 512);
    const { stdout: bombTar } = await execFileAsync(
      "sh",
      ["-c", `head -c ${(IMAGE_MAX_MB + 64) * 2 ** 20} /dev/zero | zstd -q -c`],
      { encoding: "buffer", maxBuffer: 1 << 26 },
    );
    // A tar whose one file claims the whole size: its header, then the zeros.
    const sizeField = (IMAGE_MAX_MB + 64) * 2 ** 20;
    const big = Buffer.from(header);
    Buffer.from(`${sizeField.toString(8).padStart(11, "0")}\0`).copy(big, 124);
    big.fill(" ", 148, 156);
    let sum = 0;
    for (const byte of big) sum += byte;
    Buffer.from(`${sum.toString(8).padStart(6, "0")}\0 `).copy(big, 148);
    const bomb = Buffer.concat([execFileSync("zstd", ["-q", "-c"], { input: big }), bombTar]);
    registry.image("evil/bomb", "v1", [bomb]);
    await expectBuildFailure(
      `${registry.host}/evil/bomb:v1`,
      new RegExp(`unpacks to more than ${IMAGE_MAX_MB} MiB, this node's limit`),
    );
  });

  test("another team's cached blobs are out of reach: naming their digest is not enough", async () => {
    // Team A pulls a private image: its layer lands in A's blob cache (the build then fails on
    // the layer's absolute name, quickly).
    const secretLayer = gzipSync(rawTar([{ path: `/secret-${token}`, data: "team A's secret" }]));
    const manifest = registry.image("team-a/private", "v1", [secretLayer]);
    const { layers } = JSON.parse(manifest.toString()) as { layers: Array<{ digest: string }> };
    await expectBuildFailure(`${registry.host}/team-a/private:v1`, /is an absolute path/);
    // Team B's registry names that digest but cannot serve it.
    const res = await fetch(`${moat.env.E2B_API_URL}/admin/teams`, {
      method: "POST",
      headers: { "x-admin-token": moat.env.MOAT_ADMIN_TOKEN!, "content-type": "application/json" },
      body: JSON.stringify({ name: `oci-b-${token}` }),
    });
    assert.equal(res.status, 201, await res.clone().text());
    const teamB = (await res.json()) as { apiKey: string };
    registry.rawManifest("team-b/steal", "v1", manifest);
    registry.routes.set(`/v2/team-b/steal/blobs/${layers[0]!.digest}`, (_req, res) => {
      res.writeHead(404, { "content-type": "application/json" });
      res.end(JSON.stringify({ errors: [{ code: "BLOB_UNKNOWN", message: "blob unknown" }] }));
    });
    await expectBuildFailure(
      `${registry.host}/team-b/steal:v1`,
      /fetching blob sha256:[0-9a-f]{64} of .*team-b\/steal:v1 failed: 404 BLOB_UNKNOWN/,
      undefined,
      teamB.apiKey,
    );
  });

  test("registries on loopback the operator did not allow are refused before any connection", async () => {
    const unlisted = await canaryListener("127.0.0.3");
    try {
      await expectBuildFailure(
        `127.0.0.3:${unlisted.port}/team/img:v1`,
        /refusing to connect to 127\.0\.0\.3, a loopback address: .*MOAT_REGISTRY_ALLOW/,
      );
      await expectBuildFailure(
        `localhost:${registry.port}/team/img:v1`,
        /refusing to connect to localhost \(127\.0\.0\.1\), a loopback address/,
      );
      assert.equal(unlisted.hits(), 0, "no connection reached the unlisted registry");
      assert.ok(
        !registry.requests.some((r) => r.url.includes("team/img")),
        "nor the registry through 'localhost'",
      );
    } finally {
      unlisted.close();
    }
  });

  test("redirects to loopback addresses are refused; each hop is checked", async () => {
    const target = await canaryListener("127.0.0.3");
    try {
      for (const location of [
        `https://127.0.0.3:${target.port}/x`,
        `https://localhost:${target.port}/x`,
        `http://127.0.0.3:${target.port}/x`,
      ]) {
        registry.routes.set("/v2/evil/redirect/manifests/v1", (_req, res) => {
          res.writeHead(307, { location });
          res.end();
        });
        await expectBuildFailure(
          `${registry.host}/evil/redirect:v1`,
          /refusing (to connect to|plain HTTP to)/,
        );
      }
      assert.equal(target.hits(), 0, "no redirect reached the loopback target");
    } finally {
      target.close();
    }
  });

  test("credentials: never to a token service on another host, never past a cross-host redirect", async () => {
    const creds = { username: "alice", password: `secret-${token}` };
    // The registry's Bearer challenge names a token service on another host.
    registry.routes.set("/v2/private/img/manifests/v1", (req, res) => {
      if (req.headers.authorization !== "Bearer good-token") {
        res.writeHead(401, {
          "www-authenticate": `Bearer realm="http://${other.host}/token",service="evil",scope="repository:private/img:pull"`,
        });
        return void res.end();
      }
      res.writeHead(200, { "content-type": OCI_MANIFEST });
      res.end(registry.image("private/img", "resolved", [gzipSync(rawTar([{ path: "f", data: "x" }]))]));
    });
    other.routes.set("/token", (req, res) => {
      res.writeHead(req.headers.authorization ? 200 : 401, { "content-type": "application/json" });
      res.end(
        JSON.stringify(
          req.headers.authorization ? { token: "good-token" } : { errors: [{ code: "UNAUTHORIZED" }] },
        ),
      );
    });
    const logs = await expectBuildFailure(
      `${registry.host}/private/img:v1`,
      /pull token .* 401 UNAUTHORIZED/,
      creds,
    );
    const asked = other.requests.filter((r) => r.url.startsWith("/token"));
    assert.ok(asked.length > 0, "the token service was asked");
    assert.deepEqual(
      asked.map((r) => r.authorization),
      asked.map(() => undefined),
      "the token service on another host got no credentials",
    );
    assert.ok(
      logs.some((l) => /not on 127\.0\.0\.1:\d+'s host or site/.test(l)),
      logs.join("\n"),
    );

    // Same-host Bearer auth; then the blob redirects to storage on another host, which must get
    // no credentials (it answers 404 to end the build quickly).
    registry.routes.delete("/v2/private/img/manifests/v1");
    registry.routes.set("/token", (req, res) => {
      const ok =
        req.headers.authorization ===
        `Basic ${Buffer.from(`${creds.username}:${creds.password}`).toString("base64")}`;
      res.writeHead(ok ? 200 : 401, { "content-type": "application/json" });
      res.end(JSON.stringify(ok ? { token: "good-token" } : {}));
    });
    const manifest = registry.image("private/img2", "v1", [gzipSync(rawTar([{ path: "g", data: "y" }]))]);
    const layer = (JSON.parse(manifest.toString()) as { layers: Array<{ digest: string }> }).layers[0]!
      .digest;
    registry.routes.set("/v2/private/img2/manifests/v1", (req, res) => {
      if (req.headers.authorization !== "Bearer good-token") {
        res.writeHead(401, {
          "www-authenticate": `Bearer realm="http://${registry.host}/token",service="r"`,
        });
        return void res.end();
      }
      res.writeHead(200, { "content-type": OCI_MANIFEST });
      res.end(manifest);
    });
    registry.routes.set(`/v2/private/img2/blobs/${layer}`, (_req, res) => {
      res.writeHead(307, { location: `http://${other.host}/storage/${layer}` });
      res.end();
    });
    await expectBuildFailure(`${registry.host}/private/img2:v1`, /404/, creds);
    assert.ok(
      registry.requests.some(
        (r) =>
          r.url === "/token?service=r&scope=repository%3Aprivate%2Fimg2%3Apull" &&
          r.authorization?.startsWith("Basic "),
      ),
      "the registry's own token service got the credentials",
    );
    const storage = other.requests.filter((r) => r.url.startsWith("/storage/"));
    assert.equal(storage.length, 1, "the redirect was followed");
    assert.equal(storage[0]!.authorization, undefined, "blob storage on another host got no token");
  });

  test("registry answers reach the build log only as a status and a sanitized error code", async () => {
    const secret = `internal-${randomBytes(6).toString("hex")}`;
    registry.routes.set("/v2/evil/body/manifests/v1", (_req, res) => {
      res.writeHead(404, { "content-type": "text/html" });
      res.end(`<html>internal admin page ${secret}</html>`);
    });
    const logs = await expectBuildFailure(
      `${registry.host}/evil/body:v1`,
      /manifest 'v1' of .* failed: 404 \(check the image name and tag\)/,
    );
    assert.ok(!logs.join("\n").includes(secret), "the body is not in the build log");
    registry.routes.set("/v2/evil/body/manifests/v2", (_req, res) => {
      res.writeHead(403, { "content-type": "application/json" });
      res.end(
        JSON.stringify({ errors: [{ code: "DENIED", message: `no\u001b[2J\r\nway ${"z".repeat(1000)}` }] }),
      );
    });
    const denied = await expectBuildFailure(
      `${registry.host}/evil/body:v2`,
      /403 DENIED: no \[2J way z+… \(check the registry credentials\)/,
    );
    assert.ok(!denied.join("\n").includes("\u001b"), "no control characters in the log");
  });

  test("after all that, an image with links to `/` and the host builds, inside its own rootfs", async () => {
    // The base template's Debian without `user`, tini or docs, and a layer of symlink chains that
    // point out (to `/`, `..` past the root, the host's canary dir) with files written through them.
    const base = await findBaseTemplate(CACHE_DIR);
    assert.ok(base, "moat setup built the base template");
    // Asynchronously: a blocked event loop would leave the SDK a keep-alive socket the API closed.
    const excluded = [
      "usr/share/doc",
      "usr/share/locale",
      "usr/share/man",
      "usr/bin/tini",
      "usr/bin/tini-static",
      "home/user",
      "etc/sudoers.d/90-moat-user",
    ];
    const { stdout: debianZstd } = await execFileAsync(
      "sh",
      [
        "-c",
        `tar -C "$1" ${excluded.map((e) => `--exclude=./${e}`).join(" ")} -cf - . | zstd -1 -q -c`,
        "sh",
        base.rootfs,
      ],
      { encoding: "buffer", maxBuffer: 1 << 30 },
    );
    const passwd = (file: string) =>
      execFileSync("grep", ["-v", "^user:", path.join(base.rootfs, "etc", file)]).toString();
    const links = rawTar([
      ...["passwd", "group", "shadow"].map((f) => ({
        path: `etc/${f}`,
        data: passwd(f),
        mode: f === "shadow" ? 0o640 : 0o644,
      })),
      { path: "a", type: "SymbolicLink", linkpath: "b" },
      { path: "b", type: "SymbolicLink", linkpath: "/" },
      { path: "up", type: "SymbolicLink", linkpath: "../../../../.." },
      { path: "host", type: "SymbolicLink", linkpath: canaries },
      { path: `a${canaries}/${pwned(10)}`, data: "via a chain to /" },
      { path: `up${canaries}/${pwned(11)}`, data: "via .. past the root" },
      { path: `host/${pwned(12)}`, data: "via a link to the host" },
      { path: "host/canary", data: "the image's own" },
    ]);
    registry.image("moat/debian", "v1", [debianZstd, gzipSync(links)]);
    const logs: string[] = [];
    await Template.build(
      Template().fromImage(`${registry.host}/moat/debian:v1`).runCmd("echo built > /home/user/ok"),
      `hostile-${token}-final`,
      { cpuCount: 1, memoryMB: 512, onBuildLogs: (e: { message: string }) => logs.push(e.message) },
    ).catch((err: Error) => {
      throw new Error(`${err.message}\nbuild log:\n${logs.join("\n")}\nmoat up:\n${moat.log().slice(-4000)}`);
    });
    await assertContained();
    const sbx = await Sandbox.create(`hostile-${token}-final`);
    try {
      const r = await sbx.commands.run(
        `cat /home/user/ok; cat ${canaries}/${pwned(10)} ${canaries}/${pwned(11)} ${canaries}/${pwned(12)} ${canaries}/canary`,
      );
      assert.equal(
        r.stdout,
        "built\nvia a chain to /via .. past the rootvia a link to the hostthe image's own",
      );
    } finally {
      await sbx.kill();
    }
  });
});

describe("the layer sandbox", () => {
  test("writes the rootfs and nothing else: host read-only or hidden, no /proc, no network, no devices", async () => {
    const work = await mkdtemp(path.join(tmpdir(), "moat-test-layer-sandbox-"));
    const listener = await canaryListener("127.0.0.1");
    try {
      const rootfs = path.join(work, "rootfs");
      const blobs = path.join(work, "blobs");
      const hidden = path.join(work, "hidden");
      for (const dir of [rootfs, blobs, hidden]) await mkdir(dir);
      await writeFile(path.join(hidden, "secret"), "secret");
      // What the extraction's code could do if its path logic were wrong.
      const probe = [
        `touch ${rootfs}/ok`,
        `touch ${blobs}/pwned`,
        `touch ${work}/pwned`,
        "touch /pwned",
        "touch /usr/pwned",
        "touch /dev/pwned",
        `cat ${hidden}/secret`,
        "ls /proc/1",
        "ls /sys/class",
        `node -e "require('net').connect(${listener.port}, '127.0.0.1').on('error', () => process.exit(3))"`,
        "echo x > /dev/sda",
      ]
        .map((cmd) => `if ${cmd} >/dev/null 2>&1; then echo "allowed: ${cmd.replaceAll('"', "'")}"; fi`)
        .join("\n");
      const { stdout } = await execFileAsync(
        "bwrap",
        [...layerSandboxArgs(rootfs, [blobs]), "/bin/sh", "-c", probe],
        {
          env: { PATH: "/usr/bin:/bin" },
        },
      );
      assert.equal(stdout, `allowed: touch ${rootfs}/ok\n`);
      assert.deepEqual(await readdir(rootfs), ["ok"]);
      assert.deepEqual((await readdir(work)).sort(), ["blobs", "hidden", "rootfs"]);
      assert.deepEqual(await readdir(blobs), []);
      assert.equal(listener.hits(), 0, "no connection left the sandbox's own network namespace");
    } finally {
      listener.close();
      await rm(work, { recursive: true, force: true });
    }
  });
});
