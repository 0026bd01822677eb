import { exitWithError } from "./console/errors.js";
import { moatProgram } from "./program.js";

await moatProgram()
  .parseAsync(process.argv)
  .catch((err: unknown) => exitWithError(err));
