/**
 * Replacing a sandbox's egress rules (the UpdateNetwork RPC): applied at once while it runs (new
 * connections follow them; those open carry on), kept in its record for its resume while it is
 * paused, refused between states. A failed apply puts the previous rules back.
 */
import type { Logger } from "@moat/shared";
import type { EgressFields } from "../network/egress-rules.js";
import { checkEgress } from "./create-input.js";
import { SandboxStateError } from "./errors.js";
import type { SandboxFactory } from "./factory.js";
import { writeRecord } from "./record.js";
import type { Sandbox } from "./sandbox.js";

export async function updateEgress(
  sandbox: Sandbox,
  fields: EgressFields,
  deps: { factory: SandboxFactory; dataDir: string; logger: Logger },
): Promise<void> {
  checkEgress(fields);
  if (sandbox.state !== "running" && sandbox.state !== "paused") {
    throw new SandboxStateError(sandbox.id, sandbox.state, "change the network rules of");
  }
  const r = sandbox.record;
  const previous: EgressFields = {
    allowInternetAccess: r.allowInternetAccess,
    allowOut: r.allowOut,
    denyOut: r.denyOut,
  };
  const next: EgressFields = {
    allowInternetAccess: fields.allowInternetAccess,
    allowOut: fields.allowOut ?? [],
    denyOut: fields.denyOut ?? [],
  };
  Object.assign(r, next);
  if (sandbox.state === "running") {
    try {
      await deps.factory.applyEgress(sandbox);
    } catch (err) {
      Object.assign(r, previous);
      await deps.factory.applyEgress(sandbox).catch(() => undefined);
      throw err;
    }
  }
  await writeRecord(deps.dataDir, r);
  deps.logger.info({ sandboxID: sandbox.id, state: sandbox.state, ...next }, "sandbox network rules updated");
}
