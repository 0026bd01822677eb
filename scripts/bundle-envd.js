#!/usr/bin/env node
// Bundles envd (from the compiled dist) into one ESM file, packages/envd/dist/envd.mjs, which
// sandboxes run. Native modules stay external and load from node_modules when first needed.
import path from "node:path";
import { build } from "esbuild";

const root = path.resolve(import.meta.dirname, "..");
await build({
  entryPoints: [path.join(root, "packages/envd/dist/bin.js")],
  outfile: path.join(root, "packages/envd/dist/envd.mjs"),
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
