import { volumeMountsProblem } from "@moat/shared";
import { type EgressFields, EgressRuleError, egressRulesOf } from "../network/egress-rules.js";
import { MAX_DISK_SIZE_MB, MIN_DISK_SIZE_MB } from "../storage/disk.js";
import { checkVolumeRef } from "../storage/volumes.js";
import type { TemplateBuild, TemplateResolver } from "../template/store.js";
import { InvalidSandboxConfigError, TemplateNotFoundError } from "./errors.js";

/** What a create asks of the node (the API checked the team's rights and quotas before). */
export interface CreateInput {
  sandboxID: string;
  templateID: string;
  /** The template build; empty for the base template. */
  buildID?: string;
  teamID: string;
  vcpu: number;
  memoryMB: number;
  /** Most the writable layer may hold, in MiB; 0: the node's default. */
  diskSizeMB: number;
  envVars: Record<string, string>;
  metadata: Record<string, string>;
  envdAccessToken: string;
  allowInternetAccess: boolean;
  /** Egress rules (E2B's network.allowOut / denyOut; network/egress-rules.ts). */
  allowOut?: string[];
  denyOut?: string[];
  defaultUser: string;
  defaultWorkdir: string;
  /** At the end time, pause instead of kill (keeping memory unless autoPauseMemory is false). */
  autoPause?: boolean;
  autoPauseMemory?: boolean;
  /** Start from this sandbox snapshot (its memory, processes and files) instead of the template's. */
  snapshotID?: string;
  /** The team's volumes mounted read-write at their paths (storage/volumes.ts). */
  volumeMounts?: VolumeMountInput[];
  endTime: Date;
}

export interface VolumeMountInput {
  volumeID: string;
  name: string;
  path: string;
}

const SANDBOX_ID = /^[a-z0-9]{1,63}$/;

export function validateCreate(input: CreateInput): void {
  if (!SANDBOX_ID.test(input.sandboxID)) {
    throw new InvalidSandboxConfigError(`sandbox id '${input.sandboxID}' must match ${SANDBOX_ID}`);
  }
  if (!Number.isInteger(input.vcpu) || input.vcpu < 1 || input.vcpu > 64) {
    throw new InvalidSandboxConfigError(`vcpu must be an integer from 1 to 64, got ${input.vcpu}`);
  }
  if (!Number.isInteger(input.memoryMB) || input.memoryMB < 64 || input.memoryMB > 256 * 1024) {
    throw new InvalidSandboxConfigError(`memory_mb must be from 64 to 262144, got ${input.memoryMB}`);
  }
  const disk = input.diskSizeMB;
  if (!Number.isInteger(disk) || (disk !== 0 && (disk < MIN_DISK_SIZE_MB || disk > MAX_DISK_SIZE_MB))) {
    throw new InvalidSandboxConfigError(
      `disk_size_mb must be 0 (the node's default) or from ${MIN_DISK_SIZE_MB} to ${MAX_DISK_SIZE_MB}, got ${disk}`,
    );
  }
  if (Number.isNaN(input.endTime.getTime())) throw new InvalidSandboxConfigError("end_time is invalid");
  checkEgress(input);
  const mounts = input.volumeMounts ?? [];
  // The API checked these; the node checks again before any of it names a host directory or a mount.
  const problem = volumeMountsProblem(mounts);
  if (problem) throw new InvalidSandboxConfigError(problem);
  for (const mount of mounts) {
    try {
      checkVolumeRef({ teamID: input.teamID, volumeID: mount.volumeID });
    } catch (err) {
      throw new InvalidSandboxConfigError((err as Error).message);
    }
  }
}

/** Egress rules that parse, else InvalidSandboxConfigError naming the bad entry. */
export function checkEgress(fields: EgressFields): void {
  try {
    egressRulesOf(fields);
  } catch (err) {
    if (err instanceof EgressRuleError) throw new InvalidSandboxConfigError(err.message);
    throw err;
  }
}

/** A create's template build, or TemplateNotFoundError (`buildID` empty: the base template). */
export function resolveBuild(
  templates: TemplateResolver,
  templateID: string,
  buildID?: string,
): TemplateBuild {
  const build = templates.resolve(templateID, buildID);
  if (!build) throw new TemplateNotFoundError(buildID ? `${templateID}/${buildID}` : templateID);
  return build;
}

/** A sandbox's disk size: what its create asks, else its template build's, else the node's. */
export function diskSizeOf(
  requested: number,
  build: Pick<TemplateBuild, "diskSizeMB">,
  nodeDefault: number,
): number {
  return requested || build.diskSizeMB || nodeDefault;
}
