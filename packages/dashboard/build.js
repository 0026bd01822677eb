#!/usr/bin/env node
// Bundles the dashboard into dist/: index.html and content-hashed assets (assets/app-<hash>.js,
// .css) that the API serves at /dashboard. No inline script or style, so the API's
// Content-Security-Policy can allow only 'self'. Built beside and renamed into place, so an API
// serving meanwhile reads the old directory or the new one, never half of one.
import { mkdir, rename, rm, writeFile } from "node:fs/promises";
import path from "node:path";
import { build } from "esbuild";

const here = import.meta.dirname;
const target = path.join(here, "dist");
const temp = `${target}.${process.pid}.tmp`;

await rm(temp, { recursive: true, force: true });
await mkdir(temp, { recursive: true });
try {
  const result = await build({
    entryPoints: { app: path.join(here, "src/main.tsx") },
    outdir: path.join(temp, "assets"),
    entryNames: "[name]-[hash]",
    bundle: true,
    minify: true,
    format: "esm",
    target: ["chrome110", "firefox110", "safari16"],
    jsx: "automatic",
    jsxImportSource: "preact",
    metafile: true,
    legalComments: "none",
    logLevel: "warning",
  });
  const outputs = Object.keys(result.metafile.outputs).map((file) => path.basename(file));
  const js = outputs.find((f) => f.endsWith(".js"));
  const css = outputs.find((f) => f.endsWith(".css"));
  if (!js || !css) throw new Error(`dashboard build: expected a .js and a .css, got ${outputs.join(", ")}`);
  const html = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>moat dashboard</title>
<link rel="stylesheet" href="/dashboard/assets/${css}">
<script type="module" src="/dashboard/assets/${js}"></script>
</head>
<body>
<div id="app"></div>
<noscript>The moat dashboard needs JavaScript.</noscript>
</body>
</html>
`;
  await writeFile(path.join(temp, "index.html"), html);
  await rm(target, { recursive: true, force: true });
  await rename(temp, target);
} catch (err) {
  await rm(temp, { recursive: true, force: true });
  throw err;
}
