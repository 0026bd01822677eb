/**
 * Image references as `docker pull` reads them: `python:3.12`, `ghcr.io/org/img@sha256:…`,
 * `localhost:5000/team/img:tag`. Docker Hub names get its registry and the `library/` namespace.
 */
import { splitHostPort } from "./address-policy.js";

export interface ImageReference {
  /** host[:port] of the registry. */
  registry: string;
  repository: string;
  /** A tag or a digest (`sha256:…`); the tag `latest` when neither was given. */
  reference: string;
}

const DOCKER_HUB = "registry-1.docker.io";
const REPOSITORY = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:\/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$/;
const TAG = /^[\w][\w.-]{0,127}$/;
const DIGEST = /^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]{32,}$/;

export class InvalidImageReferenceError extends Error {
  constructor(image: string, why: string) {
    super(`invalid image reference '${image}': ${why}`);
    this.name = "InvalidImageReferenceError";
  }
}

export function parseImageReference(image: string): ImageReference {
  let rest = image.trim();
  let reference = "latest";
  const at = rest.indexOf("@");
  if (at !== -1) {
    reference = rest.slice(at + 1);
    rest = rest.slice(0, at);
    if (!DIGEST.test(reference)) throw new InvalidImageReferenceError(image, "bad digest");
  } else {
    const colon = rest.lastIndexOf(":");
    if (colon > rest.lastIndexOf("/")) {
      reference = rest.slice(colon + 1);
      rest = rest.slice(0, colon);
      if (!TAG.test(reference)) throw new InvalidImageReferenceError(image, "bad tag");
    }
  }
  let registry = DOCKER_HUB;
  const slash = rest.indexOf("/");
  const first = slash === -1 ? "" : rest.slice(0, slash);
  // The first component names a registry when it looks like a host (as docker decides).
  if (first && (first.includes(".") || first.includes(":") || first === "localhost")) {
    registry = first === "docker.io" || first === "index.docker.io" ? DOCKER_HUB : first;
    rest = rest.slice(slash + 1);
    // It becomes part of a URL: only a host name or address and a port.
    if (!splitHostPort(registry)) throw new InvalidImageReferenceError(image, "bad registry host");
  }
  if (registry === DOCKER_HUB && !rest.includes("/")) rest = `library/${rest}`;
  if (!REPOSITORY.test(rest)) throw new InvalidImageReferenceError(image, "bad repository name");
  return { registry, repository: rest, reference };
}
