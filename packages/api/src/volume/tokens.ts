/**
 * A volume's token, which the SDK's `Volume` sends as `Authorization: Bearer` to the content
 * routes: an HMAC-SHA256 of the volume's id under a key in `signing_keys` (shared by every API
 * process on the database), so no token is stored, each opens exactly one volume, and the team's
 * GET /volumes/{id} can hand it out again. A deleted volume's id is never reused, so its token
 * opens nothing.
 */
import { createHmac, timingSafeEqual } from "node:crypto";
import type { DB } from "../db/database.js";
import { signingKey } from "../db/signing-keys.js";

const KEY_NAME = "volume-tokens";
const PREFIX = "moatvol_";

export class VolumeTokens {
  private key: Promise<Buffer> | undefined;

  constructor(private readonly db: DB) {}

  async token(volumeID: string): Promise<string> {
    return PREFIX + (await this.mac(volumeID)).toString("base64url");
  }

  /** Whether `presented` is the token of `volumeID` (constant time). */
  async verify(volumeID: string, presented: string): Promise<boolean> {
    if (!presented.startsWith(PREFIX)) return false;
    const given = Buffer.from(presented.slice(PREFIX.length), "base64url");
    const expected = await this.mac(volumeID);
    return given.length === expected.length && timingSafeEqual(given, expected);
  }

  private async mac(volumeID: string): Promise<Buffer> {
    return createHmac("sha256", await this.signingKey())
      .update(`moat-volume\n${volumeID}`)
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
