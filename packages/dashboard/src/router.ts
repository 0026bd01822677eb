/** Client-side routes under /dashboard (the API answers index.html for every one of them). */
import { useEffect, useState } from "preact/hooks";

export const BASE = "/dashboard";

export function navigate(path: string): void {
  history.pushState(null, "", `${BASE}${path}`);
  window.dispatchEvent(new PopStateEvent("popstate"));
}

/** The path below /dashboard, e.g. "/inspect/sandbox/abc"; "/" for the dashboard itself. */
export function usePath(): string {
  const read = () => {
    const path = location.pathname.startsWith(BASE) ? location.pathname.slice(BASE.length) : "/";
    return path === "" ? "/" : path;
  };
  const [path, setPath] = useState(read);
  useEffect(() => {
    const update = () => setPath(read());
    window.addEventListener("popstate", update);
    return () => window.removeEventListener("popstate", update);
  }, []);
  return path;
}

/** A link inside the dashboard: a real <a href> (keyboard, new tab), routed without a reload. */
export function onLinkClick(event: MouseEvent): void {
  const anchor = event.currentTarget as HTMLAnchorElement;
  if (event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
  const href = anchor.getAttribute("href") ?? "";
  if (!href.startsWith(`${BASE}/`) && href !== BASE) return;
  event.preventDefault();
  navigate(href.slice(BASE.length) || "/");
}
