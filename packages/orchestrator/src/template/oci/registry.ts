/**
 * A client of the OCI distribution API (the registry HTTP API): manifests and indexes resolved for
 * one platform, blobs downloaded once into a content-addressed cache and checked against their
 * digest and size, and the registries' auth (anonymous or Basic credentials exchanged for a Bearer
 * token, as `docker pull` does). The registry is untrusted: connections go only where the
 * operator's allow list permits (http.ts), credentials only to the registry's own host (and a
 * token service of the same site), sizes are bounded, and nothing it answers reaches the build
 * log but a status and its sanitized error code and message.
 */
import { createHash, randomBytes } from "node:crypto";
import { createWriteStream } from "node:fs";
import { mkdir, readFile, rename, rm, stat } from "node:fs/promises";
import net from "node:net";
import path from "node:path";
import { Transform } from "node:stream";
import { pipeline } from "node:stream/promises";
import { getDomain } from "tldts";
import { normalizeHost, RegistryAllowList, splitHostPort } from "./address-policy.js";
import { describeURL, type GetResponse, guardedGet, portOf, RegistryError, readBounded } from "./http.js";
import { DEFAULT_IMAGE_MAX_BYTES } from "./layers.js";
import type { ImageReference } from "./reference.js";

export { RegistryError } from "./http.js";

export const MEDIA_TYPES = {
  ociIndex: "application/vnd.oci.image.index.v1+json",
  ociManifest: "application/vnd.oci.image.manifest.v1+json",
  dockerList: "application/vnd.docker.distribution.manifest.list.v2+json",
  dockerManifest: "application/vnd.docker.distribution.manifest.v2+json",
} as const;

/** Manifests, indexes and image configs are small JSON documents. */
export const MAX_MANIFEST_BYTES = 4 * 2 ** 20;
export const MAX_CONFIG_BYTES = 4 * 2 ** 20;
const MAX_TOKEN_RESPONSE_BYTES = 1 * 2 ** 20;
const MAX_ERROR_BODY_BYTES = 64 * 2 ** 10;
/** More layers than any real image has (Docker stops at 127). */
export const MAX_LAYERS = 256;
const DIGEST = /^sha256:[0-9a-f]{64}$/;

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
  /** Where blobs are cached (`<dataDir>/cache/oci/teams/<team hash>`: a team reaches only its own). */
  cacheDir: string;
  /**
   * Registries (and token services, redirect targets) allowed beyond public addresses, and those
   * spoken to over plain HTTP (`http://host:port`; listed loopback ones are): MOAT_REGISTRY_ALLOW.
   */
  allow?: RegistryAllowList | readonly string[];
  credentials?: (registry: string) => { username: string; password: string } | undefined;
  platform?: { os: string; architecture: string };
  /** Bytes an image's blobs may take together (default 10 GiB, MOAT_IMAGE_MAX_MB). */
  maxImageBytes?: number;
  onProgress?: (message: string) => void;
  signal?: AbortSignal;
}

const MANIFEST_ACCEPT = Object.values(MEDIA_TYPES).join(", ");

export class RegistryClient {
  /** Bearer tokens per registry and repository. */
  private readonly tokens = new Map<string, string>();
  private readonly allow: RegistryAllowList;

  constructor(private readonly options: RegistryOptions) {
    this.allow =
      options.allow instanceof RegistryAllowList ? options.allow : new RegistryAllowList(options.allow ?? []);
  }

  /** Resolves the image for the platform (linux/amd64 by default) and downloads what is missing. */
  async pull(ref: ImageReference): Promise<PulledImage> {
    const platform = this.options.platform ?? { os: "linux", architecture: "amd64" };
    let manifest = await this.manifest(ref, ref.reference);
    if (manifest.mediaType === MEDIA_TYPES.ociIndex || manifest.mediaType === MEDIA_TYPES.dockerList) {
      const entries = Array.isArray(manifest.body.manifests) ? (manifest.body.manifests as Descriptor[]) : [];
      const match = entries.find(
        (m) => m?.platform?.os === platform.os && m.platform?.architecture === platform.architecture,
      );
      if (!match) {
        const offered = entries.map((m) => `${m?.platform?.os}/${m?.platform?.architecture}`).join(", ");
        throw new RegistryError(
          `${describe(ref)} has no ${platform.os}/${platform.architecture} image (it has: ${sanitize(offered) || "none"})`,
        );
      }
      checkDescriptor(match, MAX_MANIFEST_BYTES, `the ${platform.os}/${platform.architecture} manifest`);
      manifest = await this.manifest(ref, match.digest, match.size);
    }
    if (manifest.mediaType !== MEDIA_TYPES.ociManifest && manifest.mediaType !== MEDIA_TYPES.dockerManifest) {
      throw new RegistryError(`${describe(ref)}: unsupported manifest type ${sanitize(manifest.mediaType)}`);
    }
    const configDescriptor = manifest.body.config as Descriptor;
    checkDescriptor(configDescriptor, MAX_CONFIG_BYTES, "the image config");
    const layerDescriptors = Array.isArray(manifest.body.layers)
      ? (manifest.body.layers as Descriptor[])
      : [];
    if (layerDescriptors.length > MAX_LAYERS) {
      throw new RegistryError(
        `${describe(ref)} has ${layerDescriptors.length} layers, more than the ${MAX_LAYERS} allowed`,
      );
    }
    const maxImageBytes = this.options.maxImageBytes ?? DEFAULT_IMAGE_MAX_BYTES;
    let total = configDescriptor.size;
    for (const [i, layer] of layerDescriptors.entries()) {
      checkDescriptor(layer, Number.MAX_SAFE_INTEGER, `layer ${i + 1}`);
      total += layer.size;
    }
    if (total > maxImageBytes) {
      throw new RegistryError(
        `${describe(ref)} is ${mib(total)} MiB to download, more than this node's limit of ${mib(maxImageBytes)} MiB ` +
          "for an image (MOAT_IMAGE_MAX_MB)",
      );
    }
    let config: ImageConfig;
    try {
      config = JSON.parse(await readFile(await this.blob(ref, configDescriptor), "utf8")) as ImageConfig;
    } catch (err) {
      if (err instanceof RegistryError) throw err;
      throw new RegistryError(`the image config of ${describe(ref)} is not valid JSON`);
    }
    const layers: PulledImage["layers"] = [];
    for (const layer of layerDescriptors) layers.push({ ...layer, path: await this.blob(ref, layer) });
    return { digest: manifest.digest, config, layers };
  }

  /** A blob in the cache (downloaded and verified when it is not there yet). */
  async blob(ref: ImageReference, descriptor: Descriptor): Promise<string> {
    checkDescriptor(descriptor, Number.MAX_SAFE_INTEGER, "a blob");
    const hex = descriptor.digest.slice("sha256:".length);
    const file = path.join(this.options.cacheDir, "blobs", "sha256", hex);
    const cached = await stat(file).catch(() => undefined);
    if (cached?.isFile()) {
      // Content-addressed: the bytes are right; a manifest that misstates their size is not.
      if (cached.size !== descriptor.size) {
        throw new RegistryError(
          `${describe(ref)} says blob ${descriptor.digest} is ${descriptor.size} bytes; it is ${cached.size}`,
        );
      }
      return file;
    }
    await mkdir(path.dirname(file), { recursive: true });
    this.options.onProgress?.(`downloading ${descriptor.digest.slice(0, 19)} (${descriptor.size} bytes)`);
    const what = `blob ${descriptor.digest} of ${describe(ref)}`;
    const res = await this.request(ref, `/blobs/${descriptor.digest}`, {});
    if (res.status !== 200) throw await failure(res, what);
    const declared = Number(res.headers["content-length"] ?? Number.NaN);
    if (declared > descriptor.size) {
      res.body.destroy();
      throw new RegistryError(
        `${what} is ${declared} bytes, more than the ${descriptor.size} its manifest says`,
      );
    }
    const tmp = `${file}.${randomBytes(4).toString("hex")}.tmp`;
    const hash = createHash("sha256");
    let received = 0;
    // Stops at the declared size: a registry cannot fill the disk by sending more.
    const check = new Transform({
      transform(chunk: Buffer, _encoding, callback) {
        received += chunk.length;
        if (received > descriptor.size) {
          callback(
            new RegistryError(`${what} is larger than the ${descriptor.size} bytes its manifest says`),
          );
          return;
        }
        hash.update(chunk);
        callback(null, chunk);
      },
    });
    try {
      await pipeline(res.body, check, createWriteStream(tmp));
      if (received !== descriptor.size) {
        throw new RegistryError(`${what} ended after ${received} of its ${descriptor.size} bytes`);
      }
      const actual = `sha256:${hash.digest("hex")}`;
      if (actual !== descriptor.digest) throw new RegistryError(`${what} arrived as ${actual}`);
      await rename(tmp, file);
    } catch (err) {
      if (err instanceof RegistryError) throw err;
      throw new RegistryError(
        `downloading ${what} failed: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`,
      );
    } finally {
      await rm(tmp, { force: true });
    }
    return file;
  }

  private async manifest(
    ref: ImageReference,
    reference: string,
    size?: number,
  ): Promise<{ mediaType: string; digest: string; body: Record<string, unknown> }> {
    const what = `manifest '${reference}' of ${describe(ref)}`;
    const res = await this.request(ref, `/manifests/${reference}`, { accept: MANIFEST_ACCEPT });
    if (res.status !== 200) throw await failure(res, what);
    const bytes = await readBounded(res, MAX_MANIFEST_BYTES, what);
    const digest = `sha256:${createHash("sha256").update(bytes).digest("hex")}`;
    if (reference.startsWith("sha256:") && reference !== digest) {
      throw new RegistryError(`manifest ${reference} of ${describe(ref)} arrived as ${digest}`);
    }
    if (size !== undefined && bytes.length !== size) {
      throw new RegistryError(`${what} is ${bytes.length} bytes; its index says ${size}`);
    }
    let body: Record<string, unknown>;
    try {
      body = JSON.parse(bytes.toString("utf8")) as Record<string, unknown>;
      if (typeof body !== "object" || body === null || Array.isArray(body)) throw new Error("not an object");
    } catch {
      throw new RegistryError(`${what} is not a JSON manifest`);
    }
    const contentType = String(res.headers["content-type"] ?? "").split(";")[0]!;
    const mediaType = typeof body.mediaType === "string" ? body.mediaType : contentType;
    return { mediaType, digest, body };
  }

  /** GET `/v2/<repository><suffix>`, answering the registry's auth challenge once. */
  private async request(
    ref: ImageReference,
    suffix: string,
    headers: Record<string, string>,
  ): Promise<GetResponse> {
    const url = new URL(`${this.baseURL(ref.registry)}/v2/${ref.repository}${suffix}`);
    const key = `${ref.registry}/${ref.repository}`;
    const send = () => {
      const token = this.tokens.get(key);
      const creds = this.options.credentials?.(ref.registry);
      const authorization = token ? `Bearer ${token}` : creds ? `Basic ${basic(creds)}` : undefined;
      return guardedGet(url, {
        allow: this.allow,
        headers,
        // Only to the registry itself: a redirect to blob storage elsewhere gets no credentials.
        auth: authorization ? { origin: url.origin, authorization } : undefined,
        signal: this.options.signal,
      });
    };
    let res = await send();
    if (res.status !== 401) return res;
    const challenge = String(res.headers["www-authenticate"] ?? "");
    res.body.resume();
    if (!/^bearer /i.test(challenge)) return res;
    this.tokens.set(key, await this.token(ref, url, challenge));
    res = await send();
    return res;
  }

  /**
   * The token service named by a Bearer challenge, for pulling from the repository. The user's
   * credentials go to it only when it is the registry's own host or site (registry-1.docker.io →
   * auth.docker.io), over https or to an allowed plain-HTTP registry; elsewhere it is asked for an
   * anonymous token.
   */
  private async token(ref: ImageReference, registryURL: URL, challenge: string): Promise<string> {
    const params = Object.fromEntries(
      [...challenge.slice(7).matchAll(/(\w+)="([^"]*)"/g)].map((m) => [m[1]!.toLowerCase(), m[2]!]),
    );
    if (!params.realm) throw new RegistryError(`${ref.registry}: auth challenge without a realm`);
    let url: URL;
    try {
      url = new URL(params.realm);
    } catch {
      throw new RegistryError(`${ref.registry}: the auth challenge names an invalid token service`);
    }
    if (params.service) url.searchParams.set("service", params.service);
    url.searchParams.set("scope", params.scope ?? `repository:${ref.repository}:pull`);
    const creds = this.options.credentials?.(ref.registry);
    const trusted =
      sameSite(registryURL.hostname, url.hostname) &&
      (url.protocol === "https:" || this.allow.allowsPlainHttp(normalizeHost(url.hostname), portOf(url)));
    if (creds && !trusted) {
      this.options.onProgress?.(
        `the registry's token service ${describeURL(url)} is not on ${ref.registry}'s host or site: ` +
          "asking it for an anonymous token, without your credentials",
      );
    }
    const res = await guardedGet(url, {
      allow: this.allow,
      auth: creds && trusted ? { origin: url.origin, authorization: `Basic ${basic(creds)}` } : undefined,
      signal: this.options.signal,
    });
    const what = `a pull token for ${describe(ref)}`;
    if (res.status !== 200) throw await failure(res, what);
    let body: { token?: unknown; access_token?: unknown };
    try {
      body = JSON.parse((await readBounded(res, MAX_TOKEN_RESPONSE_BYTES, what)).toString("utf8"));
    } catch (err) {
      if (err instanceof RegistryError) throw err;
      throw new RegistryError(`${ref.registry}: the token service answered no JSON`);
    }
    const token = body?.token ?? body?.access_token;
    if (typeof token !== "string" || !/^[\x21-\x7e]{1,16384}$/.test(token)) {
      throw new RegistryError(`${ref.registry}: the token service answered no usable token`);
    }
    return token;
  }

  private baseURL(registry: string): string {
    const { host, port } = splitHostPort(registry) ?? { host: registry };
    // Plain HTTP only for registries the operator allows it for (listed loopback ones are).
    const plain = this.allow.allowsPlainHttp(host, port ?? 80);
    return `${plain ? "http" : "https"}://${registry}`;
  }
}

/** The same host, or the same registrable domain (public suffixes, github.io too, are not one). */
export function sameSite(a: string, b: string): boolean {
  const x = normalizeHost(a);
  const y = normalizeHost(b);
  if (x === y) return true;
  if (net.isIP(x) || net.isIP(y)) return false;
  const domain = getDomain(x, { allowPrivateDomains: true });
  return domain !== null && domain === getDomain(y, { allowPrivateDomains: true });
}

function checkDescriptor(d: Descriptor | undefined, maxSize: number, what: string): void {
  if (typeof d !== "object" || d === null || typeof d.digest !== "string" || !DIGEST.test(d.digest)) {
    throw new RegistryError(`${what} has no sha256 digest moat can use`);
  }
  if (!Number.isSafeInteger(d.size) || d.size < 0) throw new RegistryError(`${what} has no valid size`);
  if (d.size > maxSize) {
    throw new RegistryError(`${what} is ${d.size} bytes, more than the ${maxSize} allowed`);
  }
}

function basic(creds: { username: string; password: string }): string {
  return Buffer.from(`${creds.username}:${creds.password}`).toString("base64");
}

function describe(ref: ImageReference): string {
  return `${ref.registry}/${ref.repository}${ref.reference.startsWith("sha256:") ? "@" : ":"}${ref.reference}`;
}

function mib(bytes: number): number {
  return Math.ceil(bytes / 2 ** 20);
}

/** Registry-supplied text fit for the build log: printable ASCII, at most `max` characters. */
export function sanitize(text: string, max = 200): string {
  const clean = text.replace(/[^\x20-\x7e]+/g, " ").trim();
  return clean.length > max ? `${clean.slice(0, max)}…` : clean;
}

/**
 * A failed response as the build log shows it: the status and, when the registry answered its
 * structured error (`{"errors": [{"code", "message"}]}`), that code and message, sanitized. The
 * rest of the body is never shown: it could be anything the registry's host serves.
 */
async function failure(res: GetResponse, what: string): Promise<RegistryError> {
  let detail = "";
  try {
    const body = JSON.parse((await readBounded(res, MAX_ERROR_BODY_BYTES, what)).toString("utf8"));
    const first = Array.isArray(body?.errors) ? body.errors[0] : undefined;
    const code = typeof first?.code === "string" ? sanitize(first.code, 40) : "";
    const message = typeof first?.message === "string" ? sanitize(first.message) : "";
    detail = [code, message].filter(Boolean).join(": ");
  } catch {
    res.body.destroy();
  }
  const hint =
    res.status === 401 || res.status === 403
      ? " (check the registry credentials)"
      : res.status === 404
        ? " (check the image name and tag)"
        : "";
  return new RegistryError(`fetching ${what} failed: ${res.status}${detail ? ` ${detail}` : ""}${hint}`);
}
