import { moatProgram } from "./program.js";

await moatProgram().parseAsync(process.argv);
