export { fileSignature } from "./auth/access-token.js";
export { parseEnvdArgs, type RunEnvdOptions, runEnvd } from "./main.js";
export { type Envd, type EnvdOptions, startEnvd } from "./server.js";
