/** The base template build and a create of it, as the unit tests on the fake runtime use them. */
import type { CreateInput } from "../../src/sandbox/create-input.js";
import type { TemplateBuild } from "../../src/template/store.js";

export const BASE = {
  templateID: "base",
  key: "base",
  dir: "/nonexistent/base",
  lowers: ["/nonexistent/base/rootfs"],
  vcpu: 1,
  memoryMB: 512,
  diskSizeMB: 0,
  env: {},
} as unknown as TemplateBuild;

/** A create of the base template that ends in an hour; `extra` overrides any field. */
export function createInput(sandboxID: string, extra: Partial<CreateInput> = {}): CreateInput {
  return {
    sandboxID,
    templateID: "base",
    teamID: "team",
    vcpu: 1,
    memoryMB: 512,
    diskSizeMB: 0,
    envVars: {},
    metadata: {},
    envdAccessToken: "",
    allowInternetAccess: true,
    defaultUser: "",
    defaultWorkdir: "",
    endTime: new Date(Date.now() + 3_600_000),
    ...extra,
  };
}
