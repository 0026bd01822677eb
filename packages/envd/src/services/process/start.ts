import { stat } from "node:fs/promises";
import type { HandlerContext } from "@connectrpc/connect";
import { Code, ConnectError } from "@connectrpc/connect";
import { START_COMMAND_TAG } from "@moat/shared";
import type { StartRequest } from "@moat/shared/gen/envd/process";
import { resolvePath } from "../../auth/paths.js";
import type { User } from "../../auth/users.js";
import { requestUser } from "../../context.js";
import { ProcessHandle } from "./handle.js";
import { logOutput } from "./log-output.js";
import type { ProcessService } from "./service.js";

const DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
const isRoot = process.getuid?.() === 0;

/** Start: runs a command as the request's user and streams its output until it ends. */
export async function* start(service: ProcessService, req: StartRequest, hctx: HandlerContext) {
  const config = req.process;
  if (!config?.cmd) throw new ConnectError("process.cmd is required", Code.InvalidArgument);
  const { state } = service.ctx;
  const user = requestUser(service.ctx, hctx.requestHeader);
  if (!isRoot && user.uid !== process.getuid?.()) {
    throw new ConnectError(
      `envd is not running as root and cannot act as '${user.name}'`,
      Code.PermissionDenied,
    );
  }

  const cwd = config.cwd
    ? resolvePath(config.cwd, user, state.defaultWorkdir)
    : (state.defaultWorkdir ?? user.home);
  await requireDirectory(cwd);

  await state.settling;
  const env = processEnv(user, state.envVars, config.envs);
  const size = req.pty?.size;
  const handle = await ProcessHandle.spawn({
    config,
    tag: req.tag,
    user,
    switchUser: isRoot && user.uid !== process.getuid?.(),
    env,
    cwd,
    // An absent field keeps stdin open, as envd did before the field existed.
    stdin: req.stdin ?? true,
    pty: req.pty ? { cols: size?.cols || 80, rows: size?.rows || 24 } : undefined,
  });
  service.register(handle);
  if (req.tag === START_COMMAND_TAG) logOutput(handle, service.ctx.logger);
  // The call's deadline (Connect-Timeout-Ms) bounds the process's life, whether or not the client
  // is still attached when it passes.
  const timeoutMs = hctx.timeoutMs();
  if (timeoutMs !== undefined) handle.killAfter(timeoutMs);
  service.ctx.logger.debug(
    { pid: handle.pid, cmd: config.cmd, user: user.name, pty: handle.isPTY },
    "process started",
  );
  yield* service.follow(handle, hctx);
}

/** PATH, HOME, USER, then the sandbox's global env vars, then the request's own. */
function processEnv(
  user: User,
  global: Map<string, string>,
  own: Record<string, string>,
): Record<string, string> {
  const env: Record<string, string> = {
    PATH: process.env.PATH || DEFAULT_PATH,
    HOME: user.home,
    USER: user.name,
    LOGNAME: user.name,
    SHELL: user.shell,
  };
  for (const [k, v] of global) env[k] = v;
  for (const [k, v] of Object.entries(own)) env[k] = v;
  return env;
}

async function requireDirectory(cwd: string): Promise<void> {
  let isDir = false;
  try {
    isDir = (await stat(cwd)).isDirectory();
  } catch {
    throw new ConnectError(`cwd '${cwd}' does not exist`, Code.InvalidArgument);
  }
  if (!isDir) throw new ConnectError(`cwd '${cwd}' is not a directory`, Code.InvalidArgument);
}
