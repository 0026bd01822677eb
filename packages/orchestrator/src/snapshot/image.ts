/**
 * A checkpoint image on disk (runsc's memory and process state of one sandbox). It is written to
 * `<name>.partial` and renamed into place once runsc finished: an image under its final name is
 * always whole, and a `.partial` one is never used.
 */
import { rename, rm, stat } from "node:fs/promises";
import { makeTreePrivate } from "@moat/shared";

export function partialPath(image: string): string {
  return `${image}.partial`;
}

/** Clears the way for a new image at `image`: removes both a stale partial and an old image. */
export async function prepareImage(image: string): Promise<string> {
  await rm(partialPath(image), { recursive: true, force: true });
  return partialPath(image);
}

/** Makes the partial image the image (one rename: the commit point), readable by root only. */
export async function commitImage(image: string): Promise<void> {
  await makeTreePrivate(partialPath(image));
  await rm(image, { recursive: true, force: true });
  await rename(partialPath(image), image);
}

export async function imageExists(image: string): Promise<boolean> {
  return (await stat(image).catch(() => undefined))?.isDirectory() ?? false;
}

export async function removeImage(image: string): Promise<void> {
  await rm(partialPath(image), { recursive: true, force: true });
  await rm(image, { recursive: true, force: true });
}
