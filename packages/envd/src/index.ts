export { fileSignature } from "./auth/access-token.js";
export { type Envd, type EnvdOptions, startEnvd } from "./server.js";
