/**
 * `--artifacts` / MOAT_ARTIFACTS: where the fleet's shared artifacts are. A directory (an absolute
 * path: a shared mount such as NFS) or `s3://bucket/prefix` (endpoint and credentials from the AWS
 * SDK's variables; MOAT_S3_FORCE_PATH_STYLE=1|0, default on when AWS_ENDPOINT_URL(_S3) is set).
 */
import { stat } from "node:fs/promises";
import path from "node:path";
import { artifactSecret } from "./checksum.js";
import { DirectoryArtifactStore } from "./directory.js";
import { S3ArtifactStore } from "./s3.js";
import { type ArtifactStore, checkKey } from "./store.js";

const BUCKET = /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/;

export type ArtifactLocation =
  | { kind: "directory"; root: string }
  | { kind: "s3"; bucket: string; prefix: string };

/** Parses a location, or throws an error saying what is accepted. */
export function parseArtifactLocation(value: string): ArtifactLocation {
  const usage = "use an absolute directory path (a shared mount) or s3://bucket/prefix";
  const spec = value.trim();
  if (spec.startsWith("s3://")) {
    const [bucket = "", ...rest] = spec.slice("s3://".length).split("/");
    if (!BUCKET.test(bucket)) {
      throw new Error(
        `artifacts: '${bucket}' in '${value}' is not an S3 bucket name (3-63 of a-z, 0-9, '.', '-'); ${usage}`,
      );
    }
    const prefix = rest.join("/").replace(/^\/+|\/+$/g, "");
    if (prefix) {
      try {
        checkKey(prefix);
      } catch {
        throw new Error(
          `artifacts: the prefix '${prefix}' in '${value}' must be segments of A-Za-z0-9._- separated by '/'; ${usage}`,
        );
      }
    }
    return { kind: "s3", bucket, prefix };
  }
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(spec)) {
    throw new Error(`artifacts: '${value}' is not a supported location; ${usage}`);
  }
  if (!path.isAbsolute(spec)) throw new Error(`artifacts: '${value}' is not an absolute path; ${usage}`);
  return { kind: "directory", root: path.resolve(spec) };
}

/** Opens the store at `value` (a directory must exist); checksums are signed with MOAT_NODE_TOKEN when set. */
export async function openArtifactStore(
  value: string,
  env: NodeJS.ProcessEnv = process.env,
): Promise<ArtifactStore> {
  const location = parseArtifactLocation(value);
  const secret = artifactSecret(env);
  if (location.kind === "directory") {
    const st = await stat(location.root).catch(() => undefined);
    if (!st?.isDirectory()) {
      throw new Error(
        `artifacts: ${location.root} is not a directory: mount the shared storage there, or create it`,
      );
    }
    return new DirectoryArtifactStore(location.root, { secret });
  }
  const pathStyle = env.MOAT_S3_FORCE_PATH_STYLE;
  if (pathStyle !== undefined && pathStyle !== "0" && pathStyle !== "1") {
    throw new Error(`MOAT_S3_FORCE_PATH_STYLE must be 1 or 0, got '${pathStyle}'`);
  }
  const endpoint = env.AWS_ENDPOINT_URL_S3 || env.AWS_ENDPOINT_URL;
  return new S3ArtifactStore({
    bucket: location.bucket,
    prefix: location.prefix,
    forcePathStyle: pathStyle === undefined ? Boolean(endpoint) : pathStyle === "1",
    secret,
  });
}

/** Where a store is, for logs. */
export function describeArtifactStore(store: ArtifactStore): string {
  if (store instanceof DirectoryArtifactStore) return store.root;
  if (store instanceof S3ArtifactStore) return store.url;
  return store.kind;
}
