/**
 * Artifacts in S3-compatible object storage (AWS S3, MinIO, Ceph's radosgw, …). The endpoint, region
 * and credentials come from the AWS SDK's standard variables (`AWS_ENDPOINT_URL_S3` or
 * `AWS_ENDPOINT_URL`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, profiles, …).
 * An upload is a multipart upload streamed from the file, and S3 shows an object only once the
 * upload completed: readers see whole objects or none. A download streams into a file beside the
 * target and is renamed once its checksum (object metadata, set with the object in one write)
 * matched.
 */
import { createHash, randomBytes } from "node:crypto";
import { createReadStream, createWriteStream } from "node:fs";
import { rename, rm } from "node:fs/promises";
import { type Readable, Transform } from "node:stream";
import { pipeline } from "node:stream/promises";
import {
  DeleteObjectCommand,
  GetObjectCommand,
  type GetObjectCommandOutput,
  HeadObjectCommand,
  ListObjectsV2Command,
  S3Client,
  type S3ClientConfig,
} from "@aws-sdk/client-s3";
import { Upload } from "@aws-sdk/lib-storage";
import { checkSeal, fileDigest, sealOf } from "./checksum.js";
import { checkObjectKey } from "./directory.js";
import { type ArtifactStore, checkKey } from "./store.js";

/** The object metadata holding an object's checksum (artifacts/checksum.ts). */
const SEAL_METADATA = "moat-checksum";
/** Parts of a multipart upload: S3 takes at most 10000 of them, so files up to 160 GiB. */
const PART_SIZE = 16 * 2 ** 20;

export interface S3ArtifactStoreOptions {
  bucket: string;
  /** Key prefix, without slashes at either end ("" for the bucket's root). */
  prefix: string;
  /** Path-style addresses (`endpoint/bucket/key`), which MinIO and most self-hosted servers need. */
  forcePathStyle?: boolean;
  secret?: string;
  /** Overrides of the client's settings (tests: an endpoint, static credentials). */
  client?: S3ClientConfig;
}

export class S3ArtifactStore implements ArtifactStore {
  readonly kind = "s3";
  readonly client: S3Client;

  constructor(private readonly options: S3ArtifactStoreOptions) {
    this.client = new S3Client({
      forcePathStyle: options.forcePathStyle,
      // Checksums only where S3 requires them: the SDK's default (CRC32 trailers in aws-chunked
      // bodies) is refused by several S3-compatible servers; moat checks its own SHA-256.
      requestChecksumCalculation: "WHEN_REQUIRED",
      responseChecksumValidation: "WHEN_REQUIRED",
      ...options.client,
    });
  }

  /** `s3://bucket/prefix`, for logs and `moat doctor`. */
  get url(): string {
    return `s3://${this.options.bucket}/${this.options.prefix}`;
  }

  async putFile(key: string, file: string): Promise<void> {
    checkObjectKey(key);
    const seal = sealOf(key, await fileDigest(file), this.options.secret);
    const upload = new Upload({
      client: this.client,
      params: {
        Bucket: this.options.bucket,
        Key: this.objectKey(key),
        Body: createReadStream(file),
        Metadata: { [SEAL_METADATA]: seal },
      },
      partSize: PART_SIZE,
      queueSize: 4,
      // A failed upload aborts the multipart upload: no parts are left billed and invisible.
      leavePartsOnError: false,
    });
    await upload.done();
  }

  async getFile(key: string, file: string): Promise<boolean> {
    checkObjectKey(key);
    let answer: GetObjectCommandOutput;
    try {
      answer = await this.client.send(
        new GetObjectCommand({ Bucket: this.options.bucket, Key: this.objectKey(key) }),
      );
    } catch (err) {
      if (isNotFound(err)) return false;
      throw err;
    }
    const temp = `${file}.partial-${randomBytes(4).toString("hex")}`;
    const hash = createHash("sha256");
    try {
      await pipeline(
        answer.Body as Readable,
        new Transform({
          transform(chunk: Buffer, _encoding, done) {
            hash.update(chunk);
            done(null, chunk);
          },
        }),
        createWriteStream(temp, { mode: 0o600 }),
      );
      checkSeal(key, hash.digest("hex"), answer.Metadata?.[SEAL_METADATA], this.options.secret);
      await rename(temp, file);
      return true;
    } catch (err) {
      await rm(temp, { force: true });
      throw err;
    }
  }

  async has(key: string): Promise<boolean> {
    checkObjectKey(key);
    try {
      await this.client.send(
        new HeadObjectCommand({ Bucket: this.options.bucket, Key: this.objectKey(key) }),
      );
      return true;
    } catch (err) {
      if (isNotFound(err)) return false;
      throw err;
    }
  }

  async delete(key: string): Promise<void> {
    checkObjectKey(key);
    await this.client.send(
      new DeleteObjectCommand({ Bucket: this.options.bucket, Key: this.objectKey(key) }),
    );
  }

  async list(prefix: string): Promise<string[]> {
    const base = this.objectKey(checkKey(prefix.replace(/\/+$/, "")));
    const keys: string[] = [];
    let token: string | undefined;
    do {
      const page = await this.client.send(
        new ListObjectsV2Command({
          Bucket: this.options.bucket,
          Prefix: `${base}/`,
          ContinuationToken: token,
        }),
      );
      for (const object of page.Contents ?? []) {
        if (object.Key)
          keys.push(this.options.prefix ? object.Key.slice(this.options.prefix.length + 1) : object.Key);
      }
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token);
    return keys.sort();
  }

  /** Stops the client's connections. */
  close(): void {
    this.client.destroy();
  }

  private objectKey(key: string): string {
    return this.options.prefix ? `${this.options.prefix}/${key}` : key;
  }
}

function isNotFound(err: unknown): boolean {
  const e = err as { name?: string; $metadata?: { httpStatusCode?: number } };
  return e?.name === "NoSuchKey" || e?.name === "NotFound" || e?.$metadata?.httpStatusCode === 404;
}
