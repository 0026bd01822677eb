export { type OutputLine, resultLine } from "./execute.js";
export { findLanguage, languageNames } from "./languages.js";
export { type CodeInterpreterServer, type ServerOptions, startServer } from "./server.js";
