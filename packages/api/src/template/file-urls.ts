/**
 * Signed URLs of template files. The SDK uploads a COPY step's tar with a bare PUT (no API key: only
 * the headers the API answered and Content-Length), and a node downloads it with a bare GET, so
 * each URL carries its own authorisation:
 *
 *   <publicURL>/template-files/<teamID>/<hash>?expires=<unix seconds>&signature=<base64url>
 *
 * The signature is an HMAC-SHA256 over the method, team, hash and expiry, so an upload URL cannot
 * download, nor a download URL upload, nor either reach another team's files or outlive its
 * expiry. The key lives in the database (`signing_keys`), shared by every API process on it.
 */
import { createHmac, timingSafeEqual } from "node:crypto";
import type { DB } from "../db/database.js";
import { signingKey } from "../db/signing-keys.js";

/** Where the upload and download routes live (outside the API-key routes). */
export const TEMPLATE_FILES_PATH = "/template-files";

/** The SDK's own upload timeout is 1 h; the URL needs to hold only until the upload starts. */
export const UPLOAD_URL_TTL_SECONDS = 3600;
/** Nodes download when a build reaches its COPY step: after the steps before it, at worst hours. */
export const DOWNLOAD_URL_TTL_SECONDS = 6 * 3600;

const KEY_NAME = "template-files";

export type FileURLMethod = "PUT" | "GET";

export class FileURLSigner {
  private key: Promise<Buffer> | undefined;

  /** `baseURL` answers the API's public base URL (it is known only once the API listens). */
  constructor(
    private readonly db: DB,
    private readonly baseURL: () => string,
  ) {}

  uploadURL(teamID: string, hash: string, now = Date.now()): Promise<string> {
    return this.url("PUT", teamID, hash, now + UPLOAD_URL_TTL_SECONDS * 1000);
  }

  downloadURL(teamID: string, hash: string, now = Date.now()): Promise<string> {
    return this.url("GET", teamID, hash, now + DOWNLOAD_URL_TTL_SECONDS * 1000);
  }

  /** Whether the query of a request for `method` on the file carries a valid, unexpired signature. */
  async verify(
    method: FileURLMethod,
    teamID: string,
    hash: string,
    query: { expires?: string; signature?: string },
    now = Date.now(),
  ): Promise<boolean> {
    const { expires, signature } = query;
    if (!expires || !signature || !/^\d{1,12}$/.test(expires)) return false;
    if (Number(expires) * 1000 < now) return false;
    const expected = await this.sign(method, teamID, hash, expires);
    const given = Buffer.from(signature, "base64url");
    return given.length === expected.length && timingSafeEqual(given, expected);
  }

  private async url(method: FileURLMethod, teamID: string, hash: string, expiresAtMs: number) {
    const expires = String(Math.floor(expiresAtMs / 1000));
    const signature = (await this.sign(method, teamID, hash, expires)).toString("base64url");
    const query = new URLSearchParams({ expires, signature });
    return `${this.baseURL()}${TEMPLATE_FILES_PATH}/${teamID}/${hash}?${query}`;
  }

  private async sign(method: FileURLMethod, teamID: string, hash: string, expires: string): Promise<Buffer> {
    const key = await this.signingKey();
    return createHmac("sha256", key)
      .update(`moat-template-file\n${method}\n${teamID}\n${hash}\n${expires}`)
      .digest();
  }

  private signingKey(): Promise<Buffer> {
    if (!this.key) {
      this.key = signingKey(this.db, KEY_NAME);
      // A failed read (database down) is tried again by the next request.
      this.key.catch(() => {
        this.key = undefined;
      });
    }
    return this.key;
  }
}
