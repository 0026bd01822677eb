/**
 * Checksums of shared objects. Shared storage is less trusted than the node's disk (another host
 * writes it; a layer from it is mounted into tenants' sandboxes), so every object is put with its
 * SHA-256 and every download is verified before anything uses it. When the components share a
 * secret (MOAT_NODE_TOKEN), the checksum is an HMAC of the key and the digest under it: whoever
 * can write the storage but does not hold the secret cannot plant an object a node accepts, nor
 * move one object to another key.
 */
import { createHash, createHmac, timingSafeEqual } from "node:crypto";
import { createReadStream } from "node:fs";

export class ArtifactChecksumError extends Error {
  constructor(key: string, why: string) {
    super(
      `artifact ${key}: ${why}; the download was removed. The shared object is corrupt or was not written by a node of this fleet: delete it and publish it again`,
    );
    this.name = "ArtifactChecksumError";
  }
}

/** The SHA-256 of a file, hex. */
export async function fileDigest(file: string): Promise<string> {
  const hash = createHash("sha256");
  for await (const chunk of createReadStream(file)) hash.update(chunk as Buffer);
  return hash.digest("hex");
}

/** What is stored beside `key`: `sha256:<hex>`, or `hmac-sha256:<hex>` under the secret. */
export function sealOf(key: string, digest: string, secret?: string): string {
  if (!secret) return `sha256:${digest}`;
  const mac = createHmac("sha256", secret).update(`moat-artifact\0${key}\0${digest}`).digest("hex");
  return `hmac-sha256:${mac}`;
}

/** Throws ArtifactChecksumError unless `seal` is what `key` with this content must carry. */
export function checkSeal(key: string, digest: string, seal: string | undefined, secret?: string): void {
  if (!seal) throw new ArtifactChecksumError(key, "it has no checksum");
  const expected = Buffer.from(sealOf(key, digest, secret));
  const got = Buffer.from(seal.trim());
  if (secret && !seal.startsWith("hmac-sha256:")) {
    throw new ArtifactChecksumError(
      key,
      "its checksum is not signed with the fleet's secret (MOAT_NODE_TOKEN)",
    );
  }
  if (expected.length !== got.length || !timingSafeEqual(expected, got)) {
    throw new ArtifactChecksumError(key, "its content does not match its checksum");
  }
}

/** The secret checksums are signed with: MOAT_NODE_TOKEN when set (the same on every component). */
export function artifactSecret(env: NodeJS.ProcessEnv = process.env): string | undefined {
  return env.MOAT_NODE_TOKEN || undefined;
}
