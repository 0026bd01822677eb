/**
 * A sandbox's network settings on the API side: E2B's `allow_internet_access` and `network`
 * (allowOut/denyOut egress rules, allowPublicTraffic) at create, and `PUT /sandboxes/{id}/network`,
 * which replaces the egress rules as a whole (a field left out is cleared, as E2B does). The rules
 * are checked here with the parser the node enforces them with (@moat/shared's
 * parseEgressRules), kept in the sandbox's record (its `network` column) and enforced by its node.
 */
import { EgressRuleError, parseEgressRules } from "@moat/shared";
import type { APIContext } from "../context.js";
import { getTeamSandbox } from "../db/sandboxes.js";
import type { SandboxNetworkRecord, SandboxRow } from "../db/schema.js";
import {
  InvalidRequestError,
  NotSupportedError,
  SandboxConflictError,
  SandboxNotFoundError,
} from "../errors.js";
import {
  NodeRejectedError,
  NodeSandboxNotFoundError,
  NodeTransitionError,
} from "../orchestrator/node-client.js";
import { logSandbox, markKilled } from "./lifecycle.js";
import { nodeOf } from "./nodes.js";
import { LIVE_STATES, stateConflict } from "./states.js";

/** The egress fields of a create's `network` or of a network update, as the SDK sends them. */
export interface EgressRequest {
  allowOut?: string[];
  denyOut?: string[];
  egressProxy?: unknown;
  rules?: Record<string, unknown[]>;
}

/** Checks egress rules as the node will read them; InvalidRequestError names the bad entry. */
export function checkEgressRules(
  allowInternetAccess: boolean | null | undefined,
  egress: Pick<EgressRequest, "allowOut" | "denyOut">,
): void {
  try {
    parseEgressRules({ allowInternetAccess, allowOut: egress.allowOut, denyOut: egress.denyOut });
  } catch (err) {
    if (err instanceof EgressRuleError) throw new InvalidRequestError(err.message);
    throw err;
  }
}

/** What this version does not do is refused, never ignored: nobody should believe it is in force. */
function refuseUnsupported(egress: EgressRequest): void {
  if (egress.egressProxy) {
    throw new NotSupportedError("network.egressProxy is not supported yet by this moat version");
  }
  if (egress.rules && Object.keys(egress.rules).length > 0) {
    throw new NotSupportedError("network.rules are not supported yet by this moat version");
  }
}

/** A create's network settings, checked: what the record keeps. */
export function createNetworkSettings(body: {
  allow_internet_access?: boolean;
  network?: EgressRequest & { allowPublicTraffic?: boolean; maskRequestHost?: string; httpsPorts?: number[] };
}): { allowInternetAccess: boolean | null; network: SandboxNetworkRecord | null } {
  const allowInternetAccess = body.allow_internet_access ?? null;
  const net = body.network;
  if (!net) return { allowInternetAccess, network: null };
  refuseUnsupported(net);
  if (net.httpsPorts?.length) {
    throw new NotSupportedError("network.httpsPorts is not supported yet by this moat version");
  }
  if (net.maskRequestHost !== undefined) {
    throw new NotSupportedError("network.maskRequestHost is not supported yet by this moat version");
  }
  checkEgressRules(allowInternetAccess, net);
  const network: SandboxNetworkRecord = {};
  if (net.allowPublicTraffic !== undefined) network.allowPublicTraffic = net.allowPublicTraffic;
  if (net.allowOut?.length) network.allowOut = net.allowOut;
  if (net.denyOut?.length) network.denyOut = net.denyOut;
  return { allowInternetAccess, network: Object.keys(network).length > 0 ? network : null };
}

/**
 * Replaces the egress rules of a sandbox of the team: its node applies them at once while it runs,
 * keeps them for its resume while it is paused. Fields left out are cleared (allowOut, denyOut,
 * and allow_internet_access, which then reads as not set); allowPublicTraffic is not an egress
 * rule and stays. Answers the sandbox as it is afterwards.
 */
export async function updateSandboxNetwork(
  ctx: APIContext,
  teamID: string,
  sandboxID: string,
  update: EgressRequest & { allow_internet_access?: boolean },
): Promise<SandboxRow> {
  refuseUnsupported(update);
  const allowInternetAccess = update.allow_internet_access ?? null;
  checkEgressRules(allowInternetAccess, update);
  return ctx.locks.run(sandboxID, async () => {
    const row = await getTeamSandbox(ctx.db, teamID, sandboxID, LIVE_STATES);
    if (!row || row.state === "killing") throw new SandboxNotFoundError(sandboxID);
    if (row.state !== "running" && row.state !== "paused") throw stateConflict(sandboxID, row.state);
    try {
      await nodeOf(ctx, row).updateNetwork(sandboxID, {
        allowInternetAccess: allowInternetAccess ?? true,
        allowOut: update.allowOut ?? [],
        denyOut: update.denyOut ?? [],
      });
    } catch (err) {
      if (err instanceof NodeSandboxNotFoundError) {
        await markKilled(ctx, sandboxID, "missing on node");
        throw new SandboxNotFoundError(sandboxID);
      }
      if (err instanceof NodeTransitionError) throw new SandboxConflictError(sandboxID, "changing state");
      if (err instanceof NodeRejectedError) throw new InvalidRequestError(err.message);
      throw err;
    }
    const network: SandboxNetworkRecord = {};
    if (row.network?.allowPublicTraffic !== undefined)
      network.allowPublicTraffic = row.network.allowPublicTraffic;
    if (row.network?.maskRequestHost !== undefined) network.maskRequestHost = row.network.maskRequestHost;
    if (update.allowOut?.length) network.allowOut = update.allowOut;
    if (update.denyOut?.length) network.denyOut = update.denyOut;
    // From pausing and paused too: the node may have paused it since it was read.
    const updated = await ctx.db
      .updateTable("sandboxes")
      .set({
        allow_internet_access: allowInternetAccess,
        network: Object.keys(network).length > 0 ? JSON.stringify(network) : null,
      })
      .where("sandbox_id", "=", sandboxID)
      .where("state", "in", ["running", "pausing", "paused"])
      .returningAll()
      .executeTakeFirst();
    if (!updated) throw new SandboxNotFoundError(sandboxID);
    await logSandbox(ctx, updated, "info", "network rules updated", {
      allowInternetAccess: String(allowInternetAccess),
      allowOut: (update.allowOut ?? []).join(","),
      denyOut: (update.denyOut ?? []).join(","),
    });
    return updated;
  });
}
