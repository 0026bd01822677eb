import { type EgressAllowEntry, EgressAllowError, parseEgressAllow } from "@moat/orchestrator";
import { InvalidArgumentError } from "commander";

/** `--egress-allow`: CIDRs (optionally `:port`) that sandboxes may reach in the denied ranges. */
export function parseEgressAllowOption(value: string): EgressAllowEntry[] {
  try {
    return parseEgressAllow(value, "--egress-allow");
  } catch (err) {
    if (err instanceof EgressAllowError) throw new InvalidArgumentError(err.message);
    throw err;
  }
}

export const EGRESS_ALLOW_HELP =
  "private/link-local destinations sandboxes may reach, e.g. 10.0.0.0/8,10.1.2.3:53 (default: none)";

/** The flag's list, else MOAT_EGRESS_ALLOW's; a bad variable ends the command with its message. */
export function egressAllowOrExit(option: EgressAllowEntry[] | undefined): EgressAllowEntry[] {
  if (option) return option;
  try {
    return parseEgressAllow(process.env.MOAT_EGRESS_ALLOW);
  } catch (err) {
    if (!(err instanceof EgressAllowError)) throw err;
    process.stderr.write(`moat: ${err.message}\n`);
    process.exit(1);
  }
}
