import type { OutputLine } from "../../sandbox/envd-process.js";
import type { SandboxFactory } from "../../sandbox/factory.js";
import type { Faults } from "../../sandbox/faults.js";
import type { TemplateSnapshots } from "../../sandbox/template-snapshots.js";
import type { TemplateSnapshot } from "../../snapshot/template-snapshot.js";

/** What a template build needs of the node's sandboxes; the SandboxManager provides it. */
export interface BuildHost {
  /** Build steps run in sandboxes of their own from here. */
  readonly factory: Pick<SandboxFactory, "startBuildSandbox" | "stopBuildSandbox">;
  readonly faults: Faults;
  readonly snapshots: Pick<TemplateSnapshots, "reuse">;
  /** Makes the finished build's snapshot (and warm pool). */
  prepareTemplate(
    templateID: string,
    opts?: { buildID?: string; pool?: boolean; onOutput?: (line: OutputLine) => void },
  ): Promise<TemplateSnapshot | undefined>;
  forgetBuild(buildKey: string): Promise<void>;
  /** Layers sandboxes of the node are mounted on (never pruned). */
  lowersInUse(): Set<string>;
}
