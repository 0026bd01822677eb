#!/usr/bin/env node
// Bundles envd (from the compiled dist) into one ESM file, packages/envd/dist/envd.mjs, which
// sandboxes run, and the sudo stand-in into packages/envd/dist/sudo.mjs. Native modules stay external and load from node_modules when first needed.
import path from "node:path";
import { build } from "esbuild";

const root = path.resolve(import.meta.dirname, "..");
const entries = {
  // The daemon itself.
  "packages/envd/dist/envd.mjs": "packages/envd/dist/bin.js",
  // sudo for sandboxes, which cannot use setuid under gVisor.
  "packages/envd/dist/sudo.mjs": "packages/envd/dist/sudo/bin.js",
};
for (const [out, entry] of Object.entries(entries)) {
  await build({
    entryPoints: [path.join(root, entry)],
    outfile: path.join(root, out),
    bundle: true,
    platform: "node",
    format: "esm",
    target: "node20",
    external: ["node-pty", "@napi-rs/xattr"],
    // Bundled CommonJS dependencies call require(); give the ESM bundle one.
    banner: {
      js: "import { createRequire as __moatRequire } from 'node:module'; const require = __moatRequire(import.meta.url);",
    },
    logLevel: "warning",
  });
}
