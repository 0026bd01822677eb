/**
 * The files teams upload for COPY steps, on disk under `<dataDir>/template-files/<teamID>/<hash>`
 * (a tar, gzip or plain, as the SDK made it). An upload streams to a temporary name beside its
 * final one and is renamed when complete, so a reader never sees half a file and a failed upload
 * leaves nothing behind; nothing is held in memory.
 */
import { randomBytes } from "node:crypto";
import { createReadStream, createWriteStream } from "node:fs";
import { mkdir, rename, rm, stat } from "node:fs/promises";
import path from "node:path";
import { Readable, Transform } from "node:stream";
import { pipeline } from "node:stream/promises";
import type { ReadableStream as WebReadableStream } from "node:stream/web";
import { InvalidRequestError, TooLargeError } from "../errors.js";

const DIR = "template-files";

export class TemplateFileStore {
  constructor(
    private readonly dataDir: string,
    /** Largest file accepted. */
    readonly maxBytes: number,
  ) {}

  /** Where a team's file of that hash lives, relative to the data directory. */
  relativePath(teamID: string, hash: string): string {
    return path.join(DIR, teamID, hash);
  }

  /**
   * Writes `body` as the team's file of `hash`; answers its size and relative path. Throws
   * TooLargeError past `maxBytes` (declared or counted) and InvalidRequestError when the body
   * does not match its declared length.
   */
  async write(
    teamID: string,
    hash: string,
    body: ReadableStream<Uint8Array>,
    declaredLength: number | undefined,
  ): Promise<{ size: number; path: string }> {
    const tooLarge = () => new TooLargeError(`the file is larger than ${this.maxBytes} bytes`);
    if (declaredLength !== undefined && declaredLength > this.maxBytes) throw tooLarge();
    const relative = this.relativePath(teamID, hash);
    const final = path.join(this.dataDir, relative);
    await mkdir(path.dirname(final), { recursive: true });
    const temporary = `${final}.${randomBytes(6).toString("hex")}.tmp`;
    let size = 0;
    const maxBytes = this.maxBytes;
    const counter = new Transform({
      transform(chunk: Buffer, _encoding, callback) {
        size += chunk.length;
        callback(size > maxBytes ? tooLarge() : null, chunk);
      },
    });
    try {
      await pipeline(
        Readable.fromWeb(body as WebReadableStream<Uint8Array>),
        counter,
        createWriteStream(temporary, { flags: "wx" }),
      );
      if (declaredLength !== undefined && size !== declaredLength) {
        throw new InvalidRequestError(`the body has ${size} bytes, Content-Length says ${declaredLength}`);
      }
      await rename(temporary, final);
    } catch (err) {
      await rm(temporary, { force: true });
      throw err;
    }
    return { size, path: relative };
  }

  /** Whether the file is on this API's disk. */
  async exists(relative: string): Promise<boolean> {
    return stat(path.join(this.dataDir, relative)).then(
      (s) => s.isFile(),
      () => false,
    );
  }

  /** Removes the file; one that is not there is not an error. */
  async remove(relative: string): Promise<void> {
    await rm(path.join(this.dataDir, relative), { force: true });
  }

  /** The file's contents as a stream, with its size; undefined when it is not on disk. */
  async open(relative: string): Promise<{ body: ReadableStream<Uint8Array>; size: number } | undefined> {
    const file = path.join(this.dataDir, relative);
    const info = await stat(file).catch(() => undefined);
    if (!info?.isFile()) return undefined;
    const stream = Readable.toWeb(createReadStream(file)) as unknown as ReadableStream<Uint8Array>;
    return { body: stream, size: info.size };
  }
}
