import { InvalidArgumentError } from "commander";

const LABEL = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;

/** `--labels a,b`: names of letters, digits, '.', '_', '-', comma-separated. */
export function parseLabels(value: string): string[] {
  const labels = value
    .split(",")
    .map((l) => l.trim())
    .filter((l) => l !== "");
  for (const label of labels) {
    if (!LABEL.test(label)) {
      throw new InvalidArgumentError(`label '${label}': use 1-63 letters, digits, '.', '_' or '-'`);
    }
  }
  return [...new Set(labels)];
}

/** `--api-url`: an http(s) base URL without query or fragment. */
export function parseHTTPURL(value: string): string {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new InvalidArgumentError("expected a URL such as http://10.0.0.2:3000");
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    throw new InvalidArgumentError("expected an http:// or https:// URL");
  }
  if (url.search || url.hash) throw new InvalidArgumentError("expected a URL without query or fragment");
  return value.replace(/\/+$/, "");
}

/** `--advertise-address`: a host name or an IP address, without port or scheme. */
export function parseAddress(value: string): string {
  const address = value.trim();
  if (!/^[A-Za-z0-9.:_-]{1,253}$/.test(address) || address.includes("://")) {
    throw new InvalidArgumentError("expected a host name or IP address (no scheme, no port), e.g. 10.0.0.5");
  }
  return address;
}
