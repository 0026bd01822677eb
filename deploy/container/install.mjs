#!/usr/bin/env node
// Copies what moat runs from a built checkout (`npm ci && npm run build`) into <dest>: the root and
// workspace package.json files, each workspace's dist/ and bin/, and the production part of
// node_modules as package-lock.json lists it (entries not marked `dev`), workspace links kept as
// links. The Containerfile runs it over the build context, so the image gets no sources, tests or
// dev tools, and its build needs no npm registry. Usage: install.mjs <checkout> <dest>
import { cpSync, existsSync, mkdirSync, readFileSync, symlinkSync } from "node:fs";
import path from "node:path";

const [from, dest] = process.argv.slice(2);
if (!from || !dest) {
  console.error("usage: install.mjs <checkout> <dest>");
  process.exit(2);
}
const fail = (message) => {
  console.error(`install.mjs: ${message}`);
  process.exit(1);
};
const src = (p) => path.join(from, p);
const copy = (p) => cpSync(src(p), path.join(dest, p), { recursive: true, verbatimSymlinks: true });

const rootPackage = JSON.parse(readFileSync(src("package.json"), "utf8"));
const lock = JSON.parse(readFileSync(src("package-lock.json"), "utf8"));
mkdirSync(dest, { recursive: true });
copy("package.json");
copy("package-lock.json");

for (const workspace of rootPackage.workspaces) {
  if (!existsSync(src(`${workspace}/dist`)))
    fail(`${workspace}/dist is missing: run \`npm run build\` first`);
  copy(`${workspace}/package.json`);
  copy(`${workspace}/dist`);
  if (existsSync(src(`${workspace}/bin`))) copy(`${workspace}/bin`);
}

let copied = 0;
for (const [key, entry] of Object.entries(lock.packages)) {
  if (!key.startsWith("node_modules/") || entry.dev) continue;
  const target = path.join(dest, key);
  if (entry.link) {
    mkdirSync(path.dirname(target), { recursive: true });
    symlinkSync(path.relative(path.dirname(target), path.join(dest, entry.resolved)), target);
    continue;
  }
  if (!existsSync(src(key))) {
    // Optional dependencies for other platforms (e.g. another CPU's native binary) are absent.
    if (entry.optional) continue;
    fail(`${key} is in package-lock.json but not installed: run \`npm ci\` first`);
  }
  // Nested node_modules are entries of their own (and may be dev-only): copy the package without
  // them, and without native prebuilds for other systems (node-pty ships macOS and Windows ones).
  cpSync(src(key), target, {
    recursive: true,
    verbatimSymlinks: true,
    filter: (p) => {
      const parts = path.relative(src(key), p).split(path.sep);
      if (parts.includes("node_modules")) return false;
      const prebuild = parts.indexOf("prebuilds");
      return (
        prebuild < 0 ||
        prebuild + 1 >= parts.length ||
        parts[prebuild + 1].startsWith(`linux-${process.arch}`)
      );
    },
  });
  copied++;
}
console.log(`install.mjs: ${copied} production packages copied to ${dest}`);
