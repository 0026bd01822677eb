/**
 * Connect requests to envd's services, generated from their protobuf descriptors: a message for
 * each method (valid-looking, with field-aware values for paths, commands and pids, or mutated),
 * in the JSON or binary codec, framed as the method's kind wants (a bare unary body, one or more
 * envelopes) or framed wrongly (bad envelopes, wrong content types), with odd Connect headers;
 * and the checks an answer must pass under the Connect protocol.
 */
import {
  type DescField,
  type DescMessage,
  type DescMethod,
  fromJson,
  ScalarType,
  toBinary,
} from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";
import { codeFromString, codeToHttpStatus } from "@connectrpc/connect/protocol-connect";
import { Filesystem } from "@moat/shared/gen/envd/filesystem";
import { Process } from "@moat/shared/gen/envd/process";
import fc from "fast-check";
import { CONNECT_CODES } from "../../../packages/api/test/fuzz/check.js";
import type { RawAnswer, RawRequest } from "../../../packages/api/test/fuzz/http.js";
import { mutated } from "../../../packages/api/test/fuzz/openapi.js";
import { anyJSON, headerValue, oddString } from "../../../packages/api/test/fuzz/strings.js";

export const METHODS: DescMethod[] = [...Process.methods, ...Filesystem.methods];

/** Values for fields by their proto name, where a field's meaning matters more than its type. */
export type Hints = Record<string, fc.Arbitrary<unknown>>;

const UINT32_MAX = 4_294_967_295;

function scalarValue(type: ScalarType): fc.Arbitrary<unknown> {
  switch (type) {
    case ScalarType.STRING:
      return oddString({ maxHuge: 5_000 });
    case ScalarType.BOOL:
      return fc.boolean();
    case ScalarType.BYTES:
      return fc.uint8Array({ maxLength: 64 }).map((b) => Buffer.from(b).toString("base64"));
    case ScalarType.UINT32:
    case ScalarType.FIXED32:
      return fc.oneof(fc.constantFrom(0, 1, UINT32_MAX), fc.integer({ min: 0, max: UINT32_MAX }));
    case ScalarType.INT32:
    case ScalarType.SINT32:
    case ScalarType.SFIXED32:
      return fc.oneof(
        fc.constantFrom(0, -1, 2 ** 31 - 1, -(2 ** 31)),
        fc.integer({ min: -(2 ** 31), max: 2 ** 31 - 1 }),
      );
    case ScalarType.DOUBLE:
    case ScalarType.FLOAT:
      return fc.double({ noNaN: true, noDefaultInfinity: true });
    default:
      // 64-bit integers are strings in JSON.
      return fc.bigInt({ min: -(2n ** 63n), max: 2n ** 63n - 1n }).map(String);
  }
}

function fieldValue(field: DescField, hints: Hints, depth: number): fc.Arbitrary<unknown> {
  const hint = hints[field.name];
  if (hint) return hint;
  switch (field.fieldKind) {
    case "scalar":
      return scalarValue(field.scalar);
    case "enum":
      return fc.oneof(
        fc.constantFrom(...field.enum.values.map((v) => v.name)),
        fc.constantFrom(...field.enum.values.map((v) => v.number)),
      );
    case "message":
      return messageValue(field.message, hints, depth + 1);
    case "list": {
      const item =
        field.listKind === "message"
          ? messageValue(field.message, hints, depth + 1)
          : field.listKind === "enum"
            ? fc.constantFrom(...field.enum.values.map((v) => v.name))
            : scalarValue(field.scalar);
      return fc.array(item, { maxLength: 4 });
    }
    case "map":
      return fc.dictionary(
        oddString({ maxHuge: 1_000 }),
        field.mapKind === "message"
          ? messageValue(field.message, hints, depth + 1)
          : scalarValue(ScalarType.STRING),
        { maxKeys: 4 },
      );
  }
}

/** A message in the proto3 JSON mapping: some fields set, one member of each oneof or none. */
export function messageValue(
  desc: DescMessage,
  hints: Hints,
  depth = 0,
): fc.Arbitrary<Record<string, unknown>> {
  if (depth > 4) return fc.constant({});
  const parts: fc.Arbitrary<[string, unknown][]>[] = [];
  for (const member of desc.members) {
    if (member.kind === "oneof") {
      parts.push(
        fc.oneof(
          fc.constant<[string, unknown][]>([]),
          ...member.fields.map((f) =>
            fieldValue(f, hints, depth).map((v) => [[f.jsonName, v]] as [string, unknown][]),
          ),
        ),
      );
    } else {
      parts.push(
        fc
          .option(fieldValue(member, hints, depth), { freq: 4, nil: undefined })
          .map((v): [string, unknown][] => (v === undefined ? [] : [[member.jsonName, v]])),
      );
    }
  }
  return fc.tuple(...parts).map((entries) => Object.fromEntries(entries.flat()));
}

/**
 * Connect codes that mean the server failed rather than the request: never a fair answer to a
 * request, however malformed. (deadline_exceeded is fair when the request set a deadline,
 * unimplemented for a feature the protocol allows a server to lack.)
 */
const SERVER_FAULTS = new Set(["unknown", "internal", "data_loss", "unavailable"]);

export interface ConnectCall {
  method: DescMethod;
  codec: "json" | "proto";
  /** Whether the request set a deadline (a valid Connect-Timeout-Ms). */
  deadline: boolean;
  /** Whether an envelope claims compression with no encoding negotiated (the flags' bit 0). */
  compressedWithoutEncoding: boolean;
  request: RawRequest;
  how: string[];
}

function envelope(flags: number, payload: Uint8Array, declared = payload.length): Buffer {
  const head = Buffer.alloc(5);
  head.writeUInt8(flags, 0);
  head.writeUInt32BE(declared >>> 0, 1);
  return Buffer.concat([head, payload]);
}

/** The request body of a message as the method's kind frames it. */
function frame(method: DescMethod, payloads: Uint8Array[]): Buffer {
  if (method.methodKind === "unary") return Buffer.from(payloads[0] ?? new Uint8Array());
  return Buffer.concat(payloads.map((p) => envelope(0, p)));
}

function encodeMessage(method: DescMethod, json: unknown, codec: "json" | "proto"): Uint8Array | undefined {
  if (codec === "json") return Buffer.from(JSON.stringify(json) ?? "null");
  try {
    return toBinary(method.input, fromJson(method.input, json as never));
  } catch {
    return undefined;
  }
}

export interface CallContext {
  /** Headers every call carries (routing, access token, user). */
  base: Record<string, string>;
  hints: Hints;
}

/** Calls of one method: a valid-looking or mutated message, framed well or badly, odd headers. */
export function callsFor(method: DescMethod, ctx: CallContext): fc.Arbitrary<ConnectCall> {
  const valid = messageValue(method.input, ctx.hints);
  const message = fc.oneof(
    { weight: 5, arbitrary: valid.map((value) => ({ value: value as unknown, how: "" })) },
    { weight: 3, arbitrary: mutated(valid) },
  );
  const streaming = method.methodKind !== "unary";
  const timeout = fc.oneof(
    { weight: 4, arbitrary: fc.constant<string | undefined>(undefined) },
    { weight: 3, arbitrary: fc.integer({ min: 1_000, max: 8_000 }).map(String) },
    {
      weight: 2,
      arbitrary: fc.constantFrom(
        "0",
        "1",
        "-1",
        "",
        "abc",
        "1.5",
        "99999999999",
        "9999999999",
        "2147483648",
        " 100",
        "1e3",
        "0x10",
      ),
    },
  );
  const framing = fc.oneof(
    { weight: 8, arbitrary: fc.constant("ok") },
    {
      weight: 2,
      arbitrary: fc.constantFrom(
        "wrong content type",
        "no content type",
        "compressed flag",
        "end-stream flag",
        "flags 0xff",
        "declared too long",
        "declared too short",
        "declared huge",
        "truncated header",
        "empty body",
        "two messages",
        "bad JSON",
        "random bytes",
        "content encoding",
        "GET",
        "unknown method",
        "protocol version",
      ),
    },
  );
  return fc
    .tuple(
      message,
      fc.constantFrom<"json" | "proto">("json", "json", "proto"),
      timeout,
      framing,
      fc.uint8Array({ maxLength: 200 }),
      fc.option(headerValue(), { freq: 5 }),
      fc.option(fc.constantFrom("0", "-1", "abc", "1", "100000000"), { freq: 5 }),
    )
    .map(([msg, codec, timeoutHeader, how, randomBytes, contentType, keepalive]) => {
      const hows = [
        msg.how,
        how === "ok" ? "" : how,
        timeoutHeader === undefined ? "" : `timeout '${timeoutHeader}'`,
      ];
      let payload = encodeMessage(method, msg.value, codec);
      if (!payload) {
        // Not representable in binary: send it as JSON instead.
        codec = "json";
        payload = encodeMessage(method, msg.value, "json")!;
      }
      const suffix = codec === "json" ? "json" : "proto";
      const headers: Record<string, string> = {
        ...ctx.base,
        "Content-Type": streaming ? `application/connect+${suffix}` : `application/${suffix}`,
        "Connect-Protocol-Version": "1",
      };
      if (timeoutHeader !== undefined) headers["Connect-Timeout-Ms"] = timeoutHeader;
      if (keepalive !== null) headers["Keepalive-Ping-Interval"] = keepalive;
      let body: Buffer = frame(method, [payload]);
      let target = `/${method.parent.typeName}/${method.name}`;
      let httpMethod = "POST";
      switch (how) {
        case "wrong content type":
          headers["Content-Type"] =
            contentType ?? (streaming ? `application/${suffix}` : `application/connect+${suffix}`);
          break;
        case "no content type":
          delete headers["Content-Type"];
          break;
        case "compressed flag":
          body = streaming ? envelope(1, payload) : body;
          break;
        case "end-stream flag":
          body = streaming ? envelope(2, payload) : body;
          break;
        case "flags 0xff":
          body = streaming ? envelope(0xff, payload) : body;
          break;
        case "declared too long":
          body = streaming ? envelope(0, payload, payload.length + 10) : body;
          break;
        case "declared too short":
          body = streaming ? envelope(0, payload, Math.max(0, payload.length - 1)) : body;
          break;
        case "declared huge":
          body = streaming ? envelope(0, payload, 0xffffffff) : body;
          break;
        case "truncated header":
          body = body.subarray(0, 3);
          break;
        case "empty body":
          body = Buffer.alloc(0);
          break;
        case "two messages":
          body = streaming ? frame(method, [payload, payload]) : Buffer.concat([body, body]);
          break;
        case "bad JSON":
          body = frame(method, [Buffer.from('{"process":')]);
          break;
        case "random bytes":
          body = frame(method, [randomBytes]);
          break;
        case "content encoding":
          headers[streaming ? "Connect-Content-Encoding" : "Content-Encoding"] = contentType ?? "gzip";
          break;
        case "GET":
          httpMethod = "GET";
          target += `?connect=v1&encoding=${suffix}&message=${encodeURIComponent(Buffer.from(payload).toString("base64url"))}&base64=1`;
          break;
        case "unknown method":
          target = `/${method.parent.typeName}/${method.name}Nope`;
          break;
        case "protocol version":
          headers["Connect-Protocol-Version"] = contentType ?? "2";
          break;
      }
      // HTTP strips a header value's surrounding spaces and tabs before envd sees it: ' 100' is 100 ms.
      const deadline = timeoutHeader !== undefined && /^[ \t]*\d{1,10}[ \t]*$/.test(timeoutHeader);
      const compressedWithoutEncoding = streaming && (how === "compressed flag" || how === "flags 0xff");
      return {
        method,
        codec,
        deadline,
        compressedWithoutEncoding,
        request: { method: httpMethod, target, headers, body: httpMethod === "GET" ? undefined : body },
        how: hows.filter((h) => h !== ""),
      };
    });
}

/** A JSON object, or why the text is not one. */
function parseObject(text: string): Record<string, unknown> | string {
  try {
    const value = JSON.parse(text) as unknown;
    if (value && typeof value === "object" && !Array.isArray(value)) return value as Record<string, unknown>;
    return `not an object: ${text.slice(0, 200)}`;
  } catch {
    return `not JSON: ${text.slice(0, 200)}`;
  }
}

/** Problems with a Connect error `{code, message}` (and `details`), given the request. */
function connectErrorProblems(error: Record<string, unknown>, call: ConnectCall, status?: number): string[] {
  const problems: string[] = [];
  const code = error.code;
  if (typeof code !== "string" || !CONNECT_CODES.has(code)) {
    return [`error code ${JSON.stringify(code)} is not a Connect code`];
  }
  if (typeof error.message !== "string" || error.message === "")
    problems.push(`'${code}' error without a message`);
  const extra = Object.keys(error).filter((k) => !["code", "message", "details"].includes(k));
  if (extra.length) problems.push(`error with extra keys ${extra.join(", ")}`);
  // The Connect protocol (as gRPC's) has a receiver answer `internal` to an envelope flagged
  // compressed when no encoding was negotiated: that one is the documented answer.
  const documented =
    code === "internal" && call.compressedWithoutEncoding && /compress/.test(String(error.message));
  if (SERVER_FAULTS.has(code) && !documented)
    problems.push(`server fault '${code}': ${String(error.message)}`);
  if (code === "deadline_exceeded" && !call.deadline) problems.push("deadline_exceeded without a deadline");
  if (status !== undefined && codeToHttpStatus(codeFromString(code) ?? Code.Unknown) !== status) {
    problems.push(`code '${code}' with HTTP status ${status}`);
  }
  return problems;
}

/** The envelopes of a streamed answer, or why they do not parse. */
export function envelopes(body: Buffer): { flags: number; data: Buffer }[] | string {
  const out: { flags: number; data: Buffer }[] = [];
  let at = 0;
  while (at < body.length) {
    if (body.length - at < 5) return `a truncated envelope header at byte ${at}`;
    const flags = body.readUInt8(at);
    const length = body.readUInt32BE(at + 1);
    if (body.length - at - 5 < length) return `an envelope of ${length} bytes cut at byte ${body.length}`;
    out.push({ flags, data: body.subarray(at + 5, at + 5 + length) });
    at += 5 + length;
  }
  return out;
}

/**
 * Problems with the answer to a Connect call (empty when fine). `cut` says the client stopped
 * reading a stream still open at its deadline: a live stream is fine if what came is well formed.
 */
export function connectAnswerProblems(answer: RawAnswer, call: ConnectCall, cut: boolean): string[] {
  const type = answer.headers.get("content-type") ?? "";
  const { status } = answer;
  if (status === 404 && /^application\/json/.test(type)) {
    // Not a Connect route at all: envd's REST fallback answers `{code: 404, message}`.
    const body = parseObject(answer.text);
    if (typeof body === "string") return [`404 ${body}`];
    if (typeof body.code === "number") {
      return body.code === 404 && typeof body.message === "string"
        ? []
        : [`404 body ${answer.text.slice(0, 200)}`];
    }
  }
  const streamed = /^application\/connect\+/.test(type);
  if (!streamed) {
    if (status === 200) {
      if (call.method.methodKind !== "unary") return [`a stream answered 200 with content type '${type}'`];
      return typeof parseObject(answer.text) === "string" && call.codec === "json"
        ? ["a unary 200 without a JSON body"]
        : [];
    }
    // Refusals before any RPC (another method than POST, a content type no protocol takes): HTTP
    // level, not Connect errors; envd gives them its REST error body, {code: status, message}.
    if (status === 405 || status === 415) {
      const body = parseObject(answer.text);
      if (status === 405 && call.request.method === "POST") return ["405 for a POST"];
      return typeof body !== "string" &&
        body.code === status &&
        typeof body.message === "string" &&
        body.message
        ? []
        : [`${status} without envd's {code, message}: ${answer.text.slice(0, 200)}`];
    }
    if (!/^application\/json/.test(type))
      return [`error ${status} with content type '${type}': ${answer.text.slice(0, 200)}`];
    const body = parseObject(answer.text);
    if (typeof body === "string") return [`error ${status} ${body}`];
    return connectErrorProblems(body, call, status);
  }
  if (status !== 200) return [`a stream answered HTTP ${status}`];
  const frames = envelopes(answer.body);
  if (typeof frames === "string") return cut ? [] : [`stream with ${frames}`];
  const problems: string[] = [];
  const end = frames.findIndex((f) => (f.flags & 2) !== 0);
  if (end === -1) {
    if (!cut) problems.push("stream without an end-stream envelope");
    else if (frames.length === 0) problems.push("a stream open at the deadline without a single message");
  } else if (end !== frames.length - 1) {
    problems.push("data after the end-stream envelope");
  } else {
    const trailer = parseObject(frames[end]!.data.toString("utf8"));
    if (typeof trailer === "string") problems.push(`end-stream ${trailer}`);
    else if (trailer.error !== undefined) {
      if (!trailer.error || typeof trailer.error !== "object")
        problems.push("end-stream error is not an object");
      else problems.push(...connectErrorProblems(trailer.error as Record<string, unknown>, call));
    }
  }
  for (const f of frames) if (f.flags !== 0 && f.flags !== 2) problems.push(`envelope flags ${f.flags}`);
  return problems;
}

/** Any JSON value in place of a message, for the mutation of whole bodies. */
export const anyMessage = anyJSON;
