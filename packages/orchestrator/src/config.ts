/** Where moat keeps its state (runsc, templates, sandboxes): `MOAT_DATA_DIR`, else /var/lib/moat. */
export function defaultDataDir(): string {
  return process.env.MOAT_DATA_DIR || "/var/lib/moat";
}
