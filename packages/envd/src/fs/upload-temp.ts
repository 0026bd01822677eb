/**
 * Uploads stream into a temp file beside their target and are renamed into place, so a failed
 * upload never leaves a half-written file. Watchers skip these names: users see the target appear,
 * not envd's scaffolding.
 */
export const UPLOAD_TEMP_PREFIX = ".moat-upload-";

export function isUploadTemp(name: string): boolean {
  return name.startsWith(UPLOAD_TEMP_PREFIX);
}
