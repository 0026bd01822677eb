/** The per-sandbox limits: what one sandbox (or a template's sandboxes and builds) may ask for. */
import { InvalidRequestError } from "../errors.js";
import type { TeamLimits } from "./limits.js";

/** 400 when vCPUs or memory are past the team's per-sandbox maximum. */
export function checkResources(
  limits: TeamLimits,
  vcpu: number,
  memoryMB: number,
  what = "the template",
): void {
  if (vcpu > limits.maxVcpu) {
    throw new InvalidRequestError(
      `cpuCount: ${what} asks for ${vcpu} vCPUs, more than the ${limits.maxVcpu} a sandbox of this team may have ` +
        "(maxVcpu); use fewer, or ask the operator of this moat to raise the limit",
    );
  }
  if (memoryMB > limits.maxMemoryMB) {
    throw new InvalidRequestError(
      `memoryMB: ${what} asks for ${memoryMB} MiB, more than the ${limits.maxMemoryMB} MiB a sandbox of this team ` +
        "may have (maxMemoryMB); use less, or ask the operator of this moat to raise the limit",
    );
  }
}

/** 400 when a timeout is past the team's longest. */
export function checkTimeout(seconds: number, limits: TeamLimits, field: string): void {
  const max = limits.maxTimeoutSeconds;
  if (seconds > max) {
    throw new InvalidRequestError(
      `${field} must be at most ${max} seconds (${Math.round((max / 3600) * 100) / 100} h), got ${seconds}`,
    );
  }
}
