/**
 * Every migration, in order. Listed by hand rather than read from the directory, so the set is
 * fixed at build time and works from a bundle; names sort in the order they run.
 */
import type { Migration } from "kysely";
import * as m0001 from "./0001-initial.js";
import * as m0002 from "./0002-pause-resume.js";
import * as m0003 from "./0003-templates.js";
import * as m0004 from "./0004-template-retention.js";
import * as m0005 from "./0005-template-file-hashes.js";
import * as m0006 from "./0006-team-limits.js";
import * as m0007 from "./0007-snapshots.js";
import * as m0008 from "./0008-volumes.js";
import * as m0009 from "./0009-nodes.js";
import * as m0010 from "./0010-relocate.js";
import * as m0011 from "./0011-api-keys.js";

export const migrations: Record<string, Migration> = {
  "0001-initial": m0001,
  "0002-pause-resume": m0002,
  "0003-templates": m0003,
  "0004-template-retention": m0004,
  "0005-template-file-hashes": m0005,
  "0006-team-limits": m0006,
  "0007-snapshots": m0007,
  "0008-volumes": m0008,
  "0010-relocate": m0010,
  "0009-nodes": m0009,
  "0011-api-keys": m0011,
};
