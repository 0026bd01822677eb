/**
 * What `moat setup` and `moat doctor` read from the environment, beside the node's settings
 * (../config.ts, whose MOAT_DATA_DIR and MOAT_DISK_SIZE_MB they use too). The values are checked
 * where they are used, so that a bad one fails only the step that needs it (a bad mirror does not
 * stop a runsc that needs no download): MOAT_RUNSC must be an executable (runsc-install.ts),
 * MOAT_DEBIAN_MIRROR an http(s), ftp or file URI (apt-sources.ts).
 *
 * MOAT_MIRROR and MOAT_SECURITY_MIRROR are not read from moat's environment: base-template.ts sets
 * them for the base template's setup script in its chroot (base-definition.ts), from the Debian
 * mirror found here.
 */
import type { Env } from "../config.js";

export interface SetupConfig {
  /** MOAT_RUNSC: the runsc to use, no other tried (default: a new enough one on PATH, else Debian trixie's, downloaded). */
  runsc?: string;
  /** MOAT_DEBIAN_MIRROR: the Debian archive runsc and the base template come from (default: the host's apt sources). */
  debianMirror?: string;
}

/** The setup's variables from `env`; unset or empty ones are left out (their defaults apply). */
export function readSetupConfig(env: Env = process.env): SetupConfig {
  return {
    runsc: env.MOAT_RUNSC || undefined,
    debianMirror: env.MOAT_DEBIAN_MIRROR || undefined,
  };
}
