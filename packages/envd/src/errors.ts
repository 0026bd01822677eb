import { Code, ConnectError } from "@connectrpc/connect";

/**
 * Maps a Node fs/OS error to the Connect code envd answers with. The SDK relies on not_found
 * (FileNotFoundError, `exists()` → false) and already_exists (`makeDir()` → false).
 */
export function fsError(err: unknown, what: string): ConnectError {
  if (err instanceof ConnectError) return err;
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  const message = err instanceof Error ? err.message : String(err);
  switch (code) {
    case "ENOENT":
      return new ConnectError(`${what}: no such file or directory`, Code.NotFound, undefined, undefined, err);
    case "EEXIST":
      return new ConnectError(`${what}: already exists`, Code.AlreadyExists, undefined, undefined, err);
    case "EACCES":
    case "EPERM":
      return new ConnectError(`${what}: permission denied`, Code.PermissionDenied, undefined, undefined, err);
    case "ENOTDIR":
      return new ConnectError(`${what}: not a directory`, Code.InvalidArgument, undefined, undefined, err);
    case "EISDIR":
      return new ConnectError(`${what}: is a directory`, Code.InvalidArgument, undefined, undefined, err);
    case "ENOTEMPTY":
    case "EINVAL":
    case "ENAMETOOLONG":
    case "ELOOP":
      return new ConnectError(`${what}: ${message}`, Code.InvalidArgument, undefined, undefined, err);
    case "ENOSPC":
    case "EDQUOT":
      return new ConnectError(
        `${what}: no space left on device`,
        Code.ResourceExhausted,
        undefined,
        undefined,
        err,
      );
    default:
      return new ConnectError(`${what}: ${message}`, Code.Internal, undefined, undefined, err);
  }
}
