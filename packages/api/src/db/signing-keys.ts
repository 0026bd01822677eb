/** Keys every API process on the database shares: made by whichever process needs one first. */
import { randomBytes } from "node:crypto";
import type { DB } from "./database.js";

/** The key named `name` (32 random bytes), created now when there is none. */
export async function signingKey(db: DB, name: string): Promise<Buffer> {
  await db
    .insertInto("signing_keys")
    .values({ name, key: randomBytes(32).toString("hex") })
    .onConflict((oc) => oc.column("name").doNothing())
    .execute();
  const row = await db
    .selectFrom("signing_keys")
    .select("key")
    .where("name", "=", name)
    .executeTakeFirstOrThrow();
  return Buffer.from(row.key, "hex");
}
