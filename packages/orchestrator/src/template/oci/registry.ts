/**
 * A client of the OCI distribution API (the registry HTTP API): manifests and indexes resolved for
 * one platform, blobs downloaded once into a content-addressed cache and checked against their
 * digest, and the registries' auth (anonymous or Basic credentials exchanged for a Bearer token,
 * as `docker pull` does).
 */
import { createHash, randomBytes } from "node:crypto";
import { createWriteStream } from "node:fs";
import { mkdir, readFile, rename, rm, stat } from "node:fs/promises";
import path from "node:path";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import type { ImageReference } from "./reference.js";

export const MEDIA_TYPES = {
  ociIndex: "application/vnd.oci.image.index.v1+json",
  ociManifest: "application/vnd.oci.image.manifest.v1+json",
  dockerList: "application/vnd.docker.distribution.manifest.list.v2+json",
  dockerManifest: "application/vnd.docker.distribution.manifest.v2+json",
} as const;

export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  platform?: { os: string; architecture: string; variant?: string };
}

/** The parts of an image config a template build uses. */
export interface ImageConfig {
  architecture?: string;
  os?: string;
  config?: { Env?: string[]; Cmd?: string[]; Entrypoint?: string[]; WorkingDir?: string; User?: string };
}

export interface PulledImage {
  /** Digest of the platform manifest. */
  digest: string;
  config: ImageConfig;
  /** Layers, bottom first, each a file in the blob cache. */
  layers: Array<Descriptor & { path: string }>;
}

export interface RegistryOptions {
  /** Where blobs are cached (`<dataDir>/cache/oci`). */
  cacheDir: string;
  /** Registries spoken to over plain HTTP; loopback ones always are. */
  insecure?: readonly string[];
  credentials?: (registry: string) => { username: string; password: string } | undefined;
  platform?: { os: string; architecture: string };
  onProgress?: (message: string) => void;
}

export class RegistryError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "RegistryError";
  }
}

const MANIFEST_ACCEPT = Object.values(MEDIA_TYPES).join(", ");

export class RegistryClient {
  /** Bearer tokens per registry and repository. */
  private readonly tokens = new Map<string, string>();

  constructor(private readonly options: RegistryOptions) {}

  /** Resolves the image for the platform (linux/amd64 by default) and downloads what is missing. */
  async pull(ref: ImageReference): Promise<PulledImage> {
    const platform = this.options.platform ?? { os: "linux", architecture: "amd64" };
    let manifest = await this.manifest(ref, ref.reference);
    if (manifest.mediaType === MEDIA_TYPES.ociIndex || manifest.mediaType === MEDIA_TYPES.dockerList) {
      const entries = (manifest.body.manifests ?? []) as Descriptor[];
      const match = entries.find(
        (m) => m.platform?.os === platform.os && m.platform?.architecture === platform.architecture,
      );
      if (!match) {
        const offered = entries.map((m) => `${m.platform?.os}/${m.platform?.architecture}`).join(", ");
        throw new RegistryError(
          `${describe(ref)} has no ${platform.os}/${platform.architecture} image (it has: ${offered || "none"})`,
        );
      }
      manifest = await this.manifest(ref, match.digest);
    }
    if (manifest.mediaType !== MEDIA_TYPES.ociManifest && manifest.mediaType !== MEDIA_TYPES.dockerManifest) {
      throw new RegistryError(`${describe(ref)}: unsupported manifest type '${manifest.mediaType}'`);
    }
    const configDescriptor = manifest.body.config as Descriptor;
    const config = JSON.parse(await this.blobText(ref, configDescriptor)) as ImageConfig;
    const layers: PulledImage["layers"] = [];
    for (const layer of (manifest.body.layers ?? []) as Descriptor[]) {
      layers.push({ ...layer, path: await this.blob(ref, layer) });
    }
    return { digest: manifest.digest, config, layers };
  }

  /** A blob in the cache (downloaded and verified when it is not there yet). */
  async blob(ref: ImageReference, descriptor: Descriptor): Promise<string> {
    const [algorithm, hex] = descriptor.digest.split(":");
    if (algorithm !== "sha256" || !/^[0-9a-f]{64}$/.test(hex ?? "")) {
      throw new RegistryError(`unsupported digest '${descriptor.digest}'`);
    }
    const file = path.join(this.options.cacheDir, "blobs", "sha256", hex!);
    if (
      await stat(file).then(
        (s) => s.isFile(),
        () => false,
      )
    )
      return file;
    await mkdir(path.dirname(file), { recursive: true });
    this.options.onProgress?.(`downloading ${descriptor.digest.slice(0, 19)} (${descriptor.size} bytes)`);
    const res = await this.request(ref, `/blobs/${descriptor.digest}`, {});
    if (!res.ok || !res.body) throw await failure(res, `blob ${descriptor.digest} of ${describe(ref)}`);
    const tmp = `${file}.${randomBytes(4).toString("hex")}.tmp`;
    const hash = createHash("sha256");
    try {
      const body = Readable.fromWeb(res.body as import("node:stream/web").ReadableStream);
      body.on("data", (chunk: Buffer) => hash.update(chunk));
      await pipeline(body, createWriteStream(tmp));
      const actual = `sha256:${hash.digest("hex")}`;
      if (actual !== descriptor.digest) {
        throw new RegistryError(`blob ${descriptor.digest} of ${describe(ref)} arrived as ${actual}`);
      }
      await rename(tmp, file);
    } finally {
      await rm(tmp, { force: true });
    }
    return file;
  }

  private async blobText(ref: ImageReference, descriptor: Descriptor): Promise<string> {
    return readFile(await this.blob(ref, descriptor), "utf8");
  }

  private async manifest(
    ref: ImageReference,
    reference: string,
  ): Promise<{ mediaType: string; digest: string; body: Record<string, unknown> }> {
    const res = await this.request(ref, `/manifests/${reference}`, { headers: { accept: MANIFEST_ACCEPT } });
    if (!res.ok) throw await failure(res, `manifest '${reference}' of ${describe(ref)}`);
    const bytes = Buffer.from(await res.arrayBuffer());
    const digest = `sha256:${createHash("sha256").update(bytes).digest("hex")}`;
    if (reference.startsWith("sha256:") && reference !== digest) {
      throw new RegistryError(`manifest ${reference} of ${describe(ref)} arrived as ${digest}`);
    }
    const body = JSON.parse(bytes.toString("utf8")) as Record<string, unknown>;
    const mediaType =
      (body.mediaType as string | undefined) ?? res.headers.get("content-type")?.split(";")[0] ?? "";
    return { mediaType, digest, body };
  }

  /** GET `/v2/<repository><suffix>`, answering the registry's auth challenge once. */
  private async request(ref: ImageReference, suffix: string, init: RequestInit): Promise<Response> {
    const url = `${this.baseURL(ref.registry)}/v2/${ref.repository}${suffix}`;
    const key = `${ref.registry}/${ref.repository}`;
    const send = () => {
      const headers = new Headers(init.headers);
      const token = this.tokens.get(key);
      const creds = this.options.credentials?.(ref.registry);
      if (token) headers.set("authorization", `Bearer ${token}`);
      else if (creds) headers.set("authorization", `Basic ${basic(creds)}`);
      return fetch(url, { ...init, headers, redirect: "follow", signal: AbortSignal.timeout(600_000) });
    };
    let res = await send();
    if (res.status !== 401) return res;
    const challenge = res.headers.get("www-authenticate") ?? "";
    await res.arrayBuffer();
    if (!/^bearer /i.test(challenge)) return res;
    this.tokens.set(key, await this.token(ref, challenge));
    res = await send();
    return res;
  }

  /** The token service named by a Bearer challenge, for pulling from the repository. */
  private async token(ref: ImageReference, challenge: string): Promise<string> {
    const params = Object.fromEntries(
      [...challenge.slice(7).matchAll(/(\w+)="([^"]*)"/g)].map((m) => [m[1]!.toLowerCase(), m[2]!]),
    );
    if (!params.realm) throw new RegistryError(`${ref.registry}: auth challenge without a realm`);
    const url = new URL(params.realm);
    if (params.service) url.searchParams.set("service", params.service);
    url.searchParams.set("scope", params.scope ?? `repository:${ref.repository}:pull`);
    const creds = this.options.credentials?.(ref.registry);
    const res = await fetch(url, {
      headers: creds ? { authorization: `Basic ${basic(creds)}` } : {},
      signal: AbortSignal.timeout(60_000),
    });
    if (!res.ok) throw await failure(res, `a pull token for ${describe(ref)}`);
    const body = (await res.json()) as { token?: string; access_token?: string };
    const token = body.token ?? body.access_token;
    if (!token) throw new RegistryError(`${ref.registry}: the token service answered no token`);
    return token;
  }

  private baseURL(registry: string): string {
    const host = registry.replace(/:\d+$/, "");
    const plain =
      host === "localhost" ||
      host === "127.0.0.1" ||
      host === "[::1]" ||
      this.options.insecure?.includes(registry);
    return `${plain ? "http" : "https"}://${registry}`;
  }
}

function basic(creds: { username: string; password: string }): string {
  return Buffer.from(`${creds.username}:${creds.password}`).toString("base64");
}

function describe(ref: ImageReference): string {
  return `${ref.registry}/${ref.repository}:${ref.reference}`;
}

async function failure(res: Response, what: string): Promise<RegistryError> {
  const text = (await res.text().catch(() => "")).slice(0, 300);
  const hint =
    res.status === 401 || res.status === 403
      ? " (check the registry credentials)"
      : res.status === 404
        ? " (check the image name and tag)"
        : "";
  return new RegistryError(`fetching ${what} failed: ${res.status} ${text}${hint}`);
}
