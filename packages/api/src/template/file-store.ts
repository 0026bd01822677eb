/**
 * The files teams upload for COPY steps, on disk under `<dataDir>/template-files/<teamID>/<hash>`
 * (a tar, gzip or plain, as the SDK made it). An upload streams to a temporary name beside its
 * final one (hashed with SHA-256 as it streams) and is renamed when complete and accepted, so a
 * reader never sees half a file and a failed or refused upload leaves nothing behind; nothing is
 * held in memory.
 */

import { createHash, randomBytes } from "node:crypto";
import { once } from "node:events";
import { createReadStream, createWriteStream } from "node:fs";
import { rename, rm, stat } from "node:fs/promises";
import path from "node:path";
import { Readable, Transform } from "node:stream";
import { pipeline } from "node:stream/promises";
import type { ReadableStream as WebReadableStream } from "node:stream/web";
import { makePrivateDir, makeTreePrivate } from "@moat/shared";
import { InvalidRequestError, TooLargeError } from "../errors.js";

const DIR = "template-files";

/** An upload on disk under its temporary name, not yet in place. */
export interface ReceivedFile {
  /** Absolute path of the temporary file. */
  temporary: string;
  size: number;
  /** SHA-256 (hex) of the bytes received: what builds cache the COPY's layer by. */
  sha256: string;
}

export class TemplateFileStore {
  constructor(
    private readonly dataDir: string,
    /** Largest file accepted unless a call says otherwise. */
    readonly maxBytes: number,
  ) {}

  /** Where a team's file of that hash lives, relative to the data directory. */
  relativePath(teamID: string, hash: string): string {
    return path.join(DIR, teamID, hash);
  }

  /**
   * Streams `body` to a temporary file beside the team's file of `hash`; `commit` puts it in
   * place, `discard` removes it. Throws TooLargeError past `maxBytes` (declared or counted) and
   * InvalidRequestError when the body does not match its declared length, leaving nothing.
   */
  async receive(
    teamID: string,
    hash: string,
    body: ReadableStream<Uint8Array>,
    declaredLength: number | undefined,
    maxBytes = this.maxBytes,
  ): Promise<ReceivedFile> {
    const tooLarge = () => new TooLargeError(`the file is larger than ${maxBytes} bytes`);
    if (declaredLength !== undefined && declaredLength > maxBytes) throw tooLarge();
    const final = path.join(this.dataDir, this.relativePath(teamID, hash));
    await makePrivateDir(path.dirname(final));
    const temporary = `${final}.${randomBytes(6).toString("hex")}.tmp`;
    let size = 0;
    const digest = createHash("sha256");
    const counter = new Transform({
      transform(chunk: Buffer, _encoding, callback) {
        size += chunk.length;
        if (size > maxBytes) return callback(tooLarge());
        digest.update(chunk);
        callback(null, chunk);
      },
    });
    const file = createWriteStream(temporary, { flags: "wx", mode: 0o600 });
    try {
      await pipeline(Readable.fromWeb(body as WebReadableStream<Uint8Array>), counter, file);
      if (declaredLength !== undefined && size !== declaredLength) {
        throw new InvalidRequestError(`the body has ${size} bytes, Content-Length says ${declaredLength}`);
      }
    } catch (err) {
      // A pipeline that fails early may end before the file is even created: removed once closed.
      if (!file.closed) await once(file, "close").catch(() => undefined);
      await rm(temporary, { force: true });
      throw err;
    }
    return { temporary, size, sha256: digest.digest("hex") };
  }

  /** Puts a received file in place as the team's file of `hash`; answers its relative path. */
  async commit(received: ReceivedFile, teamID: string, hash: string): Promise<string> {
    const relative = this.relativePath(teamID, hash);
    await rename(received.temporary, path.join(this.dataDir, relative));
    return relative;
  }

  /** Removes a received file that was not accepted. */
  async discard(received: ReceivedFile): Promise<void> {
    await rm(received.temporary, { force: true });
  }

  /** Makes the uploads already on disk (from an earlier version) readable by root only. */
  async makePrivate(): Promise<void> {
    await makeTreePrivate(path.join(this.dataDir, DIR));
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
