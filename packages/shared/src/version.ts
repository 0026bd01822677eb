/**
 * The envd protocol version moat's envd implements. The SDK gates features on it (protocol doc §3.7);
 * 0.6.13 is the envd version the protocol was read from.
 */
export const ENVD_VERSION = "0.6.13";

/** The port envd listens on inside every sandbox. */
export const ENVD_PORT = 49983;
