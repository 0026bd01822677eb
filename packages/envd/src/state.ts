/**
 * What `/init` configures: the sandbox-wide env vars, the access token and the defaults that apply
 * when a request names no user or workdir. One instance per envd, shared by the RPC and REST sides.
 */
export class EnvdState {
  /** Global env vars every process gets (after PATH/HOME/USER, before the request's own envs). */
  readonly envVars = new Map<string, string>();
  /** Once set, every call except the exempt ones needs `X-Access-Token` equal to it. */
  accessToken: string | undefined;
  /** Used when a request carries no `Authorization: Basic` user. */
  defaultUser: string;
  /** Relative paths and process cwds resolve against it when set, else against the user's home. */
  defaultWorkdir: string | undefined;
  /**
   * Machine settings /init started without waiting (the hostname): process starts wait for it,
   * so every process sees them while /init answers at once.
   */
  settling: Promise<void> = Promise.resolve();

  constructor(defaultUser: string) {
    this.defaultUser = defaultUser;
    this.envVars.set("E2B_SANDBOX", "true");
  }
}
