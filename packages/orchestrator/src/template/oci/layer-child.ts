/**
 * The process that applies an image's layers, started by layers.ts inside its sandbox: it reads
 * the job (JSON) from its first argument, decompresses each layer (gzip here, zstd through
 * Debian's zstd), refuses to unpack more than the image size limit, and writes the rootfs. A
 * failure is one line on stderr, `moat-layer-error: <message>`, and exit code 1.
 */
import { spawn } from "node:child_process";
import { closeSync, createReadStream, openSync, readSync } from "node:fs";
import { type Readable, Transform } from "node:stream";
import { createGunzip } from "node:zlib";
import { ERROR_PREFIX, LayerError, LayerExtractor, type LayerJob, prepareRootfs } from "./extract.js";

function die(message: string): never {
  process.stderr.write(`${ERROR_PREFIX}${message.replace(/\s+/g, " ")}\n`);
  process.exit(1);
}

process.on("uncaughtException", (err) => die(err.message));
process.on("unhandledRejection", (err) => die(err instanceof Error ? err.message : String(err)));

const job = JSON.parse(process.argv[2] ?? "{}") as LayerJob;
const extractor = new LayerExtractor(job.rootfs);
let unpacked = 0;
const counter = () =>
  new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      unpacked += chunk.length;
      if (unpacked > job.maxBytes) {
        callback(
          new LayerError(
            `the image unpacks to more than ${Math.round(job.maxBytes / 2 ** 20)} MiB, this node's limit ` +
              "for an image (MOAT_IMAGE_MAX_MB)",
          ),
        );
      } else callback(null, chunk);
    },
  });

for (const layer of job.layers) {
  const short = layer.digest.slice(0, 19);
  try {
    const { stream, done } = decompressed(layer.path);
    const counted = counter();
    stream.on("error", (err) => counted.destroy(err));
    await Promise.all([extractor.apply(stream.pipe(counted)), done]);
  } catch (err) {
    die(`layer ${short}: ${(err as Error).message}`);
  }
}
try {
  prepareRootfs(job.rootfs, job.tini);
} catch (err) {
  die(`preparing the image's /usr/bin/tini and /tmp: ${(err as Error).message}`);
}
process.exit(0);

/**
 * The layer's tar stream, decompressed by what its first bytes say it is; `done` rejects when the
 * decompressor failed (a truncated stream alone would look like a short, valid tar).
 */
function decompressed(blob: string): { stream: Readable; done: Promise<void> } {
  const magic = Buffer.alloc(4);
  const fd = openSync(blob, "r");
  try {
    readSync(fd, magic, 0, 4, 0);
  } finally {
    closeSync(fd);
  }
  if (magic[0] === 0x1f && magic[1] === 0x8b) {
    const gunzip = createGunzip();
    const stream = createReadStream(blob)
      .on("error", (err) => gunzip.destroy(err))
      .pipe(gunzip);
    return { stream, done: Promise.resolve() };
  }
  if (magic.readUInt32LE(0) === 0xfd2fb528) {
    // Node 24's zstd is still experimental; Debian's zstd does it in a stream.
    const child = spawn("zstd", ["-dcq", "--", blob], { stdio: ["ignore", "pipe", "pipe"] });
    let stderr = "";
    child.stderr.on("data", (chunk: Buffer) => {
      if (stderr.length < 2000) stderr += chunk.toString();
    });
    const done = new Promise<void>((resolve, reject) => {
      child.once("error", reject);
      child.once("close", (code, signal) =>
        code === 0 || signal === "SIGPIPE"
          ? resolve()
          : reject(
              new LayerError(`zstd could not decompress it: ${stderr.trim() || `exit ${code ?? signal}`}`),
            ),
      );
    });
    return { stream: child.stdout, done };
  }
  return { stream: createReadStream(blob), done: Promise.resolve() };
}
