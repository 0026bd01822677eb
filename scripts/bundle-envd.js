#!/usr/bin/env node
// Assembles packages/envd/dist/sandbox/, the one host directory every sandbox mounts (read-only, at
// /opt/moat/envd): envd bundled into one ESM file (envd.mjs), the sudo stand-in (sudo.mjs and its
// shell wrapper), the code interpreter's server (code-interpreter.mjs), envd's spawn addon and the
// native modules envd loads when first needed (node-pty, @napi-rs/xattr),
// with only their runtime files. Nothing else of the checkout (.git, .env, node_modules, a data
// directory) is visible to sandboxes. Built beside and renamed into place, so a sandbox starting
// meanwhile mounts the old directory or the new one, never half of one.
import { chmod, copyFile, mkdir, readdir, rename, rm } from "node:fs/promises";
import path from "node:path";
import { build } from "esbuild";

const root = path.resolve(import.meta.dirname, "..");
const target = path.join(root, "packages/envd/dist/sandbox");
const temp = `${target}.${process.pid}.tmp`;
const nodeModules = path.join(root, "node_modules");
// Native modules envd imports; esbuild leaves them out of the bundle.
const external = ["node-pty", "@napi-rs/xattr"];

await rm(temp, { recursive: true, force: true });
await mkdir(temp, { recursive: true });
try {
  const entries = {
    // The daemon itself.
    "envd.mjs": "packages/envd/dist/bin.js",
    // sudo for sandboxes, which cannot use setuid under gVisor.
    "sudo.mjs": "packages/envd/dist/sudo/bin.js",
    // The code interpreter's server (the code-interpreter template's start command runs it).
    "code-interpreter.mjs": "packages/code-interpreter/dist/bin.js",
  };
  for (const [out, entry] of Object.entries(entries)) {
    await build({
      entryPoints: [path.join(root, entry)],
      outfile: path.join(temp, out),
      bundle: true,
      platform: "node",
      format: "esm",
      target: "node20",
      // ws loads these optional native helpers when present and does without them otherwise.
      external: [...external, "bufferutil", "utf-8-validate"],
      // Bundled CommonJS dependencies call require(); give the ESM bundle one.
      banner: {
        js: "import { createRequire as __moatRequire } from 'node:module'; const require = __moatRequire(import.meta.url);",
      },
      logLevel: "warning",
    });
  }
  await copyFile(path.join(root, "packages/envd/bin/sudo"), path.join(temp, "sudo"));
  // What code-interpreter.mjs loads into python kernels (display formatters for charts and data).
  await mkdir(path.join(temp, "code-interpreter"));
  for (const file of await readdir(path.join(root, "packages/code-interpreter/python"))) {
    if (!file.endsWith(".py")) continue;
    await copyFile(
      path.join(root, "packages/code-interpreter/python", file),
      path.join(temp, "code-interpreter", file),
    );
  }
  await chmod(path.join(temp, "sudo"), 0o755);
  // The code-interpreter template's start command.
  await copyFile(path.join(root, "packages/code-interpreter/bin/respawn"), path.join(temp, "respawn"));
  await chmod(path.join(temp, "respawn"), 0o755);

  // envd's own addon that starts processes without fork (packages/envd/native/spawn.c), built by
  // node-gyp when npm installs the envd package.
  await mkdir(path.join(temp, "native"));
  await copyFile(
    path.join(root, "packages/envd/build/Release/moat_spawn.node"),
    path.join(temp, "native/moat_spawn.node"),
  );

  // node-pty: its JavaScript (tests and source maps left out) and the addon, compiled or prebuilt.
  const prebuilt = `prebuilds/${process.platform}-${process.arch}/`;
  await copyTree(path.join(nodeModules, "node-pty"), path.join(temp, "node_modules/node-pty"), (rel) => {
    if (rel === "package.json") return true;
    if (rel.startsWith("lib/")) return rel.endsWith(".js") && !rel.endsWith(".test.js");
    if (!rel.startsWith("build/Release/") && !rel.startsWith(prebuilt)) return false;
    return rel.endsWith(".node") || rel.endsWith("spawn-helper");
  });
  // @napi-rs/xattr: the loader and this platform's binary package (named after the platform).
  await copyTree(
    path.join(nodeModules, "@napi-rs/xattr"),
    path.join(temp, "node_modules/@napi-rs/xattr"),
    (rel) => rel === "package.json" || rel === "index.js",
  );
  for (const name of await readdir(path.join(nodeModules, "@napi-rs"))) {
    if (!name.startsWith(`xattr-${process.platform}-`)) continue;
    await copyTree(
      path.join(nodeModules, "@napi-rs", name),
      path.join(temp, "node_modules/@napi-rs", name),
      (rel) => rel === "package.json" || rel.endsWith(".node"),
    );
  }

  await rm(target, { recursive: true, force: true });
  await rename(temp, target);
} finally {
  await rm(temp, { recursive: true, force: true });
}

/** Copies the files under `from` whose path (relative, with /) `keep` accepts; modes are kept. */
async function copyTree(from, to, keep, rel = "") {
  for (const entry of await readdir(path.join(from, rel), { withFileTypes: true })) {
    const child = rel ? `${rel}/${entry.name}` : entry.name;
    if (entry.isDirectory()) {
      await copyTree(from, to, keep, child);
    } else if (entry.isFile() && keep(child)) {
      await mkdir(path.dirname(path.join(to, child)), { recursive: true });
      await copyFile(path.join(from, child), path.join(to, child));
    }
  }
}
