import { parseEnvdArgs, runEnvd } from "./main.js";

await runEnvd(parseEnvdArgs(process.argv.slice(2)));
