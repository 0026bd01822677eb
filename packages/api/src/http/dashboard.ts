/**
 * The web dashboard (packages/dashboard, bundled by `npm run build` into static files) at
 * /dashboard. Every /dashboard/* path but an asset answers index.html (the page routes itself);
 * assets are served only by their exact, content-hashed names, read once into memory, so no
 * request path ever reaches the file system. Nothing here is secret: the page signs in with the
 * caller's own key and calls the same team-scoped REST routes as the SDK.
 *
 * Headers: a Content-Security-Policy allowing only this origin's script, style and API calls (the
 * bundle has no inline script or style), no framing (clickjacking the kill button), no referrer
 * (sandbox ids in the path), no MIME sniffing.
 */
import { readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import type { Context } from "hono";
import type { App } from "./env.js";
import { errorResponse } from "./errors.js";

export const DASHBOARD_PATH = "/dashboard";

/** Where `npm run build` puts the dashboard: packages/dashboard/dist, beside this package. */
const DEFAULT_DIR = path.resolve(import.meta.dirname, "../../../dashboard/dist");

export const DASHBOARD_HEADERS: Record<string, string> = {
  "Content-Security-Policy":
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; " +
    "font-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
  "X-Frame-Options": "DENY",
  "X-Content-Type-Options": "nosniff",
  "Referrer-Policy": "no-referrer",
  "Cross-Origin-Opener-Policy": "same-origin",
  "Cross-Origin-Resource-Policy": "same-origin",
};

const CONTENT_TYPES: Record<string, string> = {
  ".js": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".svg": "image/svg+xml",
  ".png": "image/png",
  ".woff2": "font/woff2",
};

export interface Bundle {
  index: string;
  assets: Map<string, { body: Uint8Array; type: string }>;
}

/** The built dashboard, or undefined when it was not built. */
export function loadDashboard(dir = DEFAULT_DIR): Bundle | undefined {
  let index: string;
  try {
    index = readFileSync(path.join(dir, "index.html"), "utf8");
  } catch {
    return undefined;
  }
  const assets = new Map<string, { body: Uint8Array; type: string }>();
  for (const entry of readdirSync(path.join(dir, "assets"), { withFileTypes: true })) {
    const type = CONTENT_TYPES[path.extname(entry.name)];
    if (!entry.isFile() || !type) continue;
    assets.set(entry.name, { body: readFileSync(path.join(dir, "assets", entry.name)), type });
  }
  return { index, assets };
}

export function registerDashboard(app: App, bundle: Bundle | undefined): void {
  const serve = (c: Context) => {
    for (const [name, value] of Object.entries(DASHBOARD_HEADERS)) c.header(name, value);
    if (!bundle) {
      return errorResponse(
        c,
        404,
        "the dashboard is not built: run `npm run build` in moat's checkout, then restart",
      );
    }
    const rest = c.req.path.slice(DASHBOARD_PATH.length);
    if (rest.startsWith("/assets/")) {
      const asset = bundle.assets.get(rest.slice("/assets/".length));
      if (!asset) return errorResponse(c, 404, `no dashboard asset ${rest}: reload the page`);
      c.header("Content-Type", asset.type);
      // Named by their content's hash: a new build has new names.
      c.header("Cache-Control", "public, max-age=31536000, immutable");
      return c.body(asset.body as Uint8Array<ArrayBuffer>, 200);
    }
    c.header("Cache-Control", "no-cache");
    return c.html(bundle.index, 200);
  };
  for (const route of [DASHBOARD_PATH, `${DASHBOARD_PATH}/*`]) {
    app.get(route, serve);
  }
}
