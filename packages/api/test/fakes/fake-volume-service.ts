/**
 * The VolumeService half of the fake orchestrator: volumes as maps of paths to entries in memory,
 * with the node's contract (NotFound for a missing volume or path, InvalidArgument for `..` or a
 * file where a directory is needed, AlreadyExists, ResourceExhausted past the volume's size,
 * FailedPrecondition when `inUse` says a sandbox mounts it). The real file handling, links and all,
 * is the orchestrator's (tested in its package and in tests/integration/up/volumes.test.ts).
 */
import type { MessageInitShape } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type ServiceImpl } from "@connectrpc/connect";
import type {
  VolumeEntrySchema,
  VolumeOwnership,
  VolumeRef,
  VolumeService,
} from "@moat/shared/gen/orchestrator";

interface FakeEntry {
  type: "file" | "directory";
  data: Buffer;
  mode: number;
  uid: number;
  gid: number;
  mtime: Date;
}

interface FakeVolume {
  sizeBytes: number;
  entries: Map<string, FakeEntry>;
}

export class FakeVolumeService {
  readonly volumes = new Map<string, FakeVolume>();
  /** Sandbox ids the node says mount a volume (by volume id); Delete refuses while any. */
  readonly inUse = new Map<string, string[]>();
  /** Every call by method name, in order. */
  readonly calls: string[] = [];
  /**
   * The artifact store's volumes, by `<team>/<volume>/<generation>` (shared by the fakes of a
   * test's nodes): Release puts there, Create with from_generation takes. Unset: no store.
   */
  published: Map<string, FakeVolume> | undefined;

  service(): ServiceImpl<typeof VolumeService> {
    return {
      create: (req) => {
        this.calls.push("create");
        const key = keyOf(req.volume);
        if (req.fromGeneration && !this.volumes.has(key)) {
          const moved = this.published?.get(`${key}/${req.fromGeneration}`);
          if (!moved)
            throw new ConnectError(
              `volume generation ${req.fromGeneration} not published`,
              Code.FailedPrecondition,
            );
          this.published?.delete(`${key}/${req.fromGeneration}`);
          this.volumes.set(key, moved);
        }
        if (!this.volumes.has(key)) {
          this.volumes.set(key, {
            sizeBytes: req.sizeMb * 1024 * 1024,
            entries: new Map([["/", dir()]]),
          });
        }
        return this.usage(key);
      },
      delete: (req) => {
        this.calls.push("delete");
        const users = this.inUse.get(req.volumeId) ?? [];
        if (users.length > 0) {
          throw new ConnectError(`volume mounted by ${users.join(", ")}`, Code.FailedPrecondition);
        }
        this.volumes.delete(keyOf(req));
        return {};
      },
      release: (req) => {
        this.calls.push("release");
        if (!this.published)
          throw new ConnectError("this node has no artifact store", Code.FailedPrecondition);
        const users = this.inUse.get(req.volume?.volumeId ?? "") ?? [];
        if (users.length > 0) {
          throw new ConnectError(`volume mounted by ${users.join(", ")}`, Code.FailedPrecondition);
        }
        const key = keyOf(req.volume);
        const volume = this.volumes.get(key);
        if (!volume) throw new ConnectError("volume not on this node", Code.NotFound);
        this.published.set(`${key}/${req.generation}`, volume);
        this.volumes.delete(key);
        return {};
      },
      usage: (req) => {
        this.calls.push("usage");
        return this.usage(keyOf(req));
      },
      stat: (req) => {
        this.calls.push("stat");
        const p = normal(req.path);
        return wire(p, this.entry(this.volume(req.volume), p));
      },
      listDir: (req) => {
        this.calls.push("listDir");
        const volume = this.volume(req.volume);
        const p = normal(req.path);
        if (this.entry(volume, p).type !== "directory") throw invalid(`'${p}' is not a directory`);
        const prefix = p === "/" ? "/" : `${p}/`;
        const depth = Math.max(1, req.depth || 1);
        const entries = [...volume.entries]
          .filter(([q]) => q !== p && q.startsWith(prefix))
          .filter(([q]) => q.slice(prefix.length).split("/").length <= depth)
          .sort(([a], [b]) => a.localeCompare(b));
        return { entries: entries.map(([q, e]) => wire(q, e)) };
      },
      makeDir: (req) => {
        this.calls.push("makeDir");
        const volume = this.volume(req.volume);
        const p = normal(req.path);
        const existing = volume.entries.get(p);
        if (existing) {
          if (req.parents && existing.type === "directory") return wire(p, existing);
          throw new ConnectError(`'${p}' already exists`, Code.AlreadyExists);
        }
        if (!req.parents) this.parentOf(volume, p);
        const parts = p.split("/").filter(Boolean);
        for (let i = 1; i <= parts.length; i++) {
          const q = `/${parts.slice(0, i).join("/")}`;
          const e = volume.entries.get(q);
          if (e && e.type !== "directory") throw invalid(`'${q}' is not a directory`);
          if (!e) volume.entries.set(q, dir(req.ownership));
        }
        return wire(p, volume.entries.get(p)!);
      },
      remove: (req) => {
        this.calls.push("remove");
        const volume = this.volume(req.volume);
        const p = normal(req.path);
        if (p === "/") throw invalid("the volume's root cannot be removed");
        this.entry(volume, p);
        for (const q of [...volume.entries.keys()]) {
          if (q === p || q.startsWith(`${p}/`)) volume.entries.delete(q);
        }
        return {};
      },
      updateMetadata: (req) => {
        this.calls.push("updateMetadata");
        const p = normal(req.path);
        const entry = this.entry(this.volume(req.volume), p);
        const o = req.ownership;
        if (o?.uid !== undefined) entry.uid = o.uid;
        if (o?.gid !== undefined) entry.gid = o.gid;
        if (o?.mode !== undefined) entry.mode = o.mode;
        return wire(p, entry);
      },
      readFile: async function* (this: FakeVolumeService, req) {
        this.calls.push("readFile");
        const p = normal(req.path);
        const entry = this.entry(this.volume(req.volume), p);
        if (entry.type !== "file") throw invalid(`'${p}' is a directory, not a file`);
        yield { part: { case: "entry", value: wire(p, entry) } };
        for (let at = 0; at < entry.data.length; at += 64 * 1024) {
          yield { part: { case: "chunk", value: entry.data.subarray(at, at + 64 * 1024) } };
        }
      }.bind(this),
      writeFile: async (requests) => {
        this.calls.push("writeFile");
        let header: { volume?: VolumeRef; path: string; ownership?: VolumeOwnership } | undefined;
        const chunks: Buffer[] = [];
        for await (const req of requests) {
          if (req.part.case === "header") header = req.part.value;
          else if (req.part.case === "chunk") chunks.push(Buffer.from(req.part.value));
        }
        if (!header) throw invalid("no header");
        const volume = this.volume(header.volume);
        const p = normal(header.path);
        if (p === "/") throw invalid("'/' is a directory");
        this.parentOf(volume, p);
        if (volume.entries.get(p)?.type === "directory") throw invalid(`'${p}' is a directory`);
        const data = Buffer.concat(chunks);
        const used = [...volume.entries.values()].reduce((n, e) => n + e.data.length, 0);
        if (used + data.length > volume.sizeBytes) {
          throw new ConnectError("the volume is full", Code.ResourceExhausted);
        }
        const o = header.ownership;
        const entry: FakeEntry = {
          type: "file",
          data,
          mode: o?.mode ?? 0o644,
          uid: o?.uid ?? 1000,
          gid: o?.gid ?? 1000,
          mtime: new Date(),
        };
        volume.entries.set(p, entry);
        return wire(p, entry);
      },
    };
  }

  private usage(key: string) {
    const volume = this.volumes.get(key);
    if (!volume) throw new ConnectError("volume not on this node", Code.NotFound);
    const used = [...volume.entries.values()].reduce((n, e) => n + e.data.length, 0);
    return { sizeBytes: BigInt(volume.sizeBytes), usedBytes: BigInt(used) };
  }

  private volume(ref: VolumeRef | undefined): FakeVolume {
    const volume = this.volumes.get(keyOf(ref));
    if (!volume) throw new ConnectError("volume not on this node", Code.NotFound);
    return volume;
  }

  private entry(volume: FakeVolume, p: string): FakeEntry {
    const entry = volume.entries.get(p);
    if (!entry) throw new ConnectError(`'${p}' does not exist`, Code.NotFound);
    return entry;
  }

  private parentOf(volume: FakeVolume, p: string): FakeEntry {
    const parent = p.slice(0, p.lastIndexOf("/")) || "/";
    const entry = this.entry(volume, parent);
    if (entry.type !== "directory") throw invalid(`'${parent}' is not a directory`);
    return entry;
  }
}

function keyOf(ref: VolumeRef | undefined): string {
  if (!ref) throw invalid("no volume");
  return `${ref.teamId}/${ref.volumeId}`;
}

function normal(p: string): string {
  const parts = p.split("/").filter(Boolean);
  if (parts.some((x) => x === "." || x === "..") || p.includes("\0")) throw invalid(`bad path '${p}'`);
  return `/${parts.join("/")}`;
}

function dir(o?: VolumeOwnership): FakeEntry {
  return {
    type: "directory",
    data: Buffer.alloc(0),
    mode: o?.mode ?? 0o755,
    uid: o?.uid ?? 1000,
    gid: o?.gid ?? 1000,
    mtime: new Date(),
  };
}

function invalid(message: string): ConnectError {
  return new ConnectError(message, Code.InvalidArgument);
}

function wire(p: string, e: FakeEntry): MessageInitShape<typeof VolumeEntrySchema> {
  const t = timestampFromDate(e.mtime);
  return {
    name: p === "/" ? "" : p.slice(p.lastIndexOf("/") + 1),
    type: e.type,
    path: p,
    size: BigInt(e.data.length),
    mode: e.mode,
    uid: e.uid,
    gid: e.gid,
    atime: t,
    mtime: t,
    ctime: t,
  };
}
