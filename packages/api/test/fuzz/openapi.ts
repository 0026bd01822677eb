/**
 * Schema-driven requests: the operations of an OpenAPI 3.0 document (the API's own
 * /openapi.json), an arbitrary of valid values for each JSON schema in it, and, per operation,
 * requests that are valid-looking or mutated in one of the ways clients get requests wrong
 * (wrong types, missing and extra fields, huge and unicode strings, odd path parameters, bad
 * query values, bad JSON, wrong content types, oversized bodies, bad credentials).
 */
import fc from "fast-check";
import {
  anyJSON,
  badJSONText,
  contentTypes,
  headerValue,
  ODD_LITERALS,
  oddNumber,
  oddString,
} from "./strings.js";

type Schema = Record<string, unknown>;

export interface Operation {
  method: string;
  /** The OpenAPI path template, e.g. /sandboxes/{sandboxID}. */
  path: string;
  params: { name: string; in: "path" | "query" | "header"; required: boolean; schema: Schema }[];
  body?: { schema: Schema; required: boolean };
  /** The statuses the document lists for it. */
  statuses: Set<number>;
  secured: boolean;
}

export interface OpenAPIDocument {
  paths: Record<string, Record<string, Schema>>;
  components?: { schemas?: Record<string, Schema> };
}

export function operationsOf(doc: OpenAPIDocument): Operation[] {
  const ops: Operation[] = [];
  for (const [path, methods] of Object.entries(doc.paths)) {
    for (const [method, op] of Object.entries(methods)) {
      const content = (op.requestBody as Schema | undefined)?.content as Record<string, Schema> | undefined;
      const json = content?.["application/json"];
      ops.push({
        method: method.toUpperCase(),
        path,
        params: ((op.parameters as Schema[] | undefined) ?? []).map((p) => ({
          name: p.name as string,
          in: p.in as "path" | "query" | "header",
          required: p.required === true,
          schema: (p.schema as Schema | undefined) ?? {},
        })),
        body: json
          ? {
              schema: (json.schema as Schema | undefined) ?? {},
              required: (op.requestBody as Schema).required === true,
            }
          : undefined,
        statuses: new Set(Object.keys((op.responses as Schema | undefined) ?? {}).map(Number)),
        secured: Array.isArray(op.security) && op.security.length > 0,
      });
    }
  }
  return ops;
}

/** Valid values of a JSON schema (OpenAPI 3.0 flavour), kept small. */
export function schemaValue(schema: Schema, doc: OpenAPIDocument, depth = 0): fc.Arbitrary<unknown> {
  const ref = schema.$ref as string | undefined;
  if (ref) {
    const name = ref.replace("#/components/schemas/", "");
    const target = doc.components?.schemas?.[name];
    if (!target) throw new Error(`unresolved $ref ${ref}`);
    return schemaValue(target, doc, depth);
  }
  const base = plainValueOf(schema, doc, depth);
  return schema.nullable === true ? fc.option(base, { nil: null, freq: 5 }) : base;
}

function plainValueOf(schema: Schema, doc: OpenAPIDocument, depth: number): fc.Arbitrary<unknown> {
  const allOf = schema.allOf as Schema[] | undefined;
  // zod-openapi writes allOf for a ref with a description beside it: the first part is the value.
  if (allOf?.length) return schemaValue(allOf[0]!, doc, depth);
  const anyOf = (schema.anyOf ?? schema.oneOf) as Schema[] | undefined;
  if (anyOf?.length) return fc.oneof(...anyOf.map((s) => schemaValue(s, doc, depth)));
  const enumValues = schema.enum as unknown[] | undefined;
  if (enumValues?.length) return fc.constantFrom(...enumValues);
  const limit = (key: string) => schema[key] as number | undefined;
  switch (schema.type) {
    case "string": {
      if (schema.format === "date-time") {
        return fc
          .date({ min: new Date("2000-01-01"), max: new Date("2100-01-01"), noInvalidDate: true })
          .map((d) => d.toISOString());
      }
      if (typeof schema.pattern === "string") return fc.stringMatching(new RegExp(schema.pattern));
      const minLength = limit("minLength") ?? 0;
      return fc.string({ minLength, maxLength: Math.max(minLength, Math.min(limit("maxLength") ?? 24, 24)) });
    }
    case "integer":
      return fc.integer({
        min: limit("minimum") ?? -1_000,
        max: Math.min(limit("maximum") ?? 100_000, Number.MAX_SAFE_INTEGER),
      });
    case "number":
      return fc.double({ min: limit("minimum") ?? -1e6, max: limit("maximum") ?? 1e6, noNaN: true });
    case "boolean":
      return fc.boolean();
    case "array": {
      const minLength = limit("minItems") ?? 0;
      const maxLength = Math.max(minLength, Math.min(limit("maxItems") ?? 3, depth > 2 ? minLength : 3));
      return fc.array(schemaValue((schema.items as Schema | undefined) ?? {}, doc, depth + 1), {
        minLength,
        maxLength,
      });
    }
    case "object":
    case undefined: {
      const properties = schema.properties as Record<string, Schema> | undefined;
      const additional = schema.additionalProperties;
      if (!properties && schema.type === undefined && additional === undefined) return anyJSON;
      const required = (schema.required as string[] | undefined) ?? [];
      const fields = fc.record(
        Object.fromEntries(
          Object.entries(properties ?? {}).map(([k, s]) => [k, schemaValue(s, doc, depth + 1)]),
        ),
        { requiredKeys: required.filter((k) => properties?.[k]) },
      );
      if (additional && typeof additional === "object" && depth < 3) {
        const extra = fc.dictionary(
          fc.string({ maxLength: 12 }),
          schemaValue(additional as Schema, doc, depth + 1),
          {
            maxKeys: 3,
          },
        );
        return fc.tuple(extra, fields).map(([e, f]) => ({ ...e, ...f }));
      }
      return fields;
    }
    default:
      return anyJSON;
  }
}

type JSONPath = (string | number)[];

/** Every place in a JSON value, with what is there. */
function placesOf(value: unknown, at: JSONPath = [], out: { path: JSONPath; value: unknown }[] = []) {
  out.push({ path: at, value });
  if (Array.isArray(value)) {
    for (const [i, v] of value.entries()) placesOf(v, [...at, i], out);
  } else if (value && typeof value === "object") {
    for (const [k, v] of Object.entries(value)) placesOf(v, [...at, k], out);
  }
  return out;
}

function setAt(root: unknown, path: JSONPath, value: unknown, remove = false): unknown {
  if (path.length === 0) return value;
  const copy = structuredClone(root) as Record<string | number, unknown>;
  let node = copy;
  for (const key of path.slice(0, -1)) node = node[key] as Record<string | number, unknown>;
  const last = path[path.length - 1]!;
  if (remove && Array.isArray(node)) node.splice(last as number, 1);
  else if (remove) delete node[last];
  else node[last] = value;
  return copy;
}

/** A valid value broken in one place: wrong type, removed, extra field, odd string or number. */
export function mutated(valid: fc.Arbitrary<unknown>): fc.Arbitrary<{ value: unknown; how: string }> {
  return fc
    .tuple(
      valid,
      fc.constantFrom("replace", "remove", "extra", "string", "number", "proto"),
      fc.nat(),
      anyJSON,
      oddString({ maxHuge: 200_000 }),
      oddNumber,
    )
    .map(([value, kind, pick, json, text, number]) => {
      const places = placesOf(value);
      const choose = <T>(list: T[]): T | undefined => (list.length ? list[pick % list.length] : undefined);
      const objects = places.filter((p) => p.value && typeof p.value === "object");
      switch (kind) {
        case "remove": {
          const place = choose(places.filter((p) => p.path.length > 0));
          if (place)
            return {
              value: setAt(value, place.path, undefined, true),
              how: `remove ${place.path.join(".")}`,
            };
          break;
        }
        case "extra": {
          const place = choose(objects.filter((p) => !Array.isArray(p.value)));
          if (place) {
            return {
              value: setAt(value, [...place.path, text.slice(0, 300)], json),
              how: `extra field at ${place.path.join(".")}`,
            };
          }
          break;
        }
        case "string": {
          const place = choose(places);
          if (place)
            return { value: setAt(value, place.path, text), how: `string at ${place.path.join(".")}` };
          break;
        }
        case "number": {
          const place = choose(places);
          if (place)
            return { value: setAt(value, place.path, number), how: `number at ${place.path.join(".")}` };
          break;
        }
        case "proto": {
          const place = choose(objects.filter((p) => !Array.isArray(p.value)));
          if (place) {
            const target = setAt(value, place.path, {}) as Record<string, unknown>;
            const node = place.path.reduce<Record<string | number, unknown>>(
              (n, k) => n[k] as Record<string | number, unknown>,
              target as Record<string | number, unknown>,
            );
            Object.assign(node, place.value as object);
            Object.defineProperty(node, "__proto__", {
              value: json,
              enumerable: true,
              configurable: true,
              writable: true,
            });
            return { value: target, how: `__proto__ at ${place.path.join(".")}` };
          }
          break;
        }
      }
      const place = choose(places)!;
      return { value: setAt(value, place.path, json), how: `replace ${place.path.join(".") || "body"}` };
    });
}

/** A request as the fuzzers send it, independent of the transport. */
export interface FuzzRequest {
  method: string;
  /** Path and query, already encoded as they go on the wire. */
  target: string;
  headers: Record<string, string>;
  body?: string;
  /** What was done to it, for the failure report. */
  how: string[];
}

export interface RequestContext {
  doc: OpenAPIDocument;
  /** Values that name things that exist, by parameter name (sandboxID, templateID, buildID, …). */
  known: Record<string, string[]>;
  /** Credentials that work (the default team's key, another team's key, an access token). */
  goodAuth: Record<string, string>[];
  /** The API's body limit: oversized bodies go just past it. */
  maxBodyBytes: number;
}

/** A percent-encoding that never throws (lone surrogates become U+FFFD first). */
export function encode(text: string): string {
  return encodeURIComponent(wellFormed(text));
}

/** The text with lone surrogates replaced by U+FFFD (what a URL or a header can carry). */
export function wellFormed(text: string): string {
  return text.replace(/[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g, "\ufffd");
}

/**
 * Text as it may go on the wire unencoded (dots, %, latin1 letters, …): only what HTTP cannot carry
 * in a request target (controls, spaces, anything past latin1) and the `special` delimiters are
 * percent-encoded.
 */
function rawSpelling(text: string, special: RegExp): string {
  return [...wellFormed(text)]
    .map((ch) => (/[^\u0021-\u00ff]/.test(ch) || special.test(ch) ? encode(ch) : ch))
    .join("");
}

/** A path segment: one that names something, a valid one, or an odd one in some spelling. */
function pathParam(
  name: string,
  schema: Schema,
  ctx: RequestContext,
): fc.Arbitrary<{ text: string; how?: string }> {
  const known = ctx.known[name] ?? [];
  const options: fc.WeightedArbitrary<{ text: string; how?: string }>[] = [
    { weight: 3, arbitrary: schemaValue(schema, ctx.doc).map((v) => ({ text: encode(String(v)) })) },
    {
      weight: 3,
      arbitrary: fc
        .tuple(oddString({ maxHuge: 20_000 }), fc.constantFrom("encoded", "raw"))
        .map(([s, spelling]) => ({
          // Raw spellings keep what a URL may carry as is (dots, %, unicode) but never / ? #.
          text: spelling === "encoded" ? encode(s) : rawSpelling(s, /[/?#]/),
          how: `odd ${name} (${spelling})`,
        })),
    },
    {
      weight: 1,
      arbitrary: fc
        .constantFrom("..", ".", "%2e%2e", "%2F", "a%2Fb", "%", "%zz", "%00", "%C0%AF", "%ff", "a;b", "a//b")
        .map((text) => ({ text, how: `path trick ${name}` })),
    },
  ];
  if (known.length)
    options.push({ weight: 5, arbitrary: fc.constantFrom(...known).map((v) => ({ text: encode(v) })) });
  return fc.oneof(...options);
}

/** One query parameter: absent, valid, or odd; sometimes repeated. */
function queryParam(name: string, schema: Schema, ctx: RequestContext): fc.Arbitrary<string[]> {
  const known = ctx.known[name] ?? [];
  const valid = schemaValue(schema, ctx.doc).map((v) => (Array.isArray(v) ? v.map(String) : [String(v)]));
  return fc.oneof(
    { weight: 3, arbitrary: fc.constant<string[]>([]) },
    { weight: 4, arbitrary: valid.map((vs) => vs.map((v) => `${encode(name)}=${encode(v)}`)) },
    ...(known.length
      ? [
          {
            weight: 2,
            arbitrary: fc.constantFrom(...known).map((v): string[] => [`${encode(name)}=${encode(v)}`]),
          },
        ]
      : []),
    {
      weight: 3,
      arbitrary: fc
        .array(fc.tuple(oddString({ maxHuge: 20_000 }), fc.boolean()), { minLength: 1, maxLength: 3 })
        .map((values) =>
          values.map(([v, raw]) => `${encode(name)}=${raw ? rawSpelling(v, /[&#]/) : encode(v)}`),
        ),
    },
    { weight: 1, arbitrary: fc.constant<string[]>([encode(name)]) },
  );
}

function badAuth(ctx: RequestContext): fc.Arbitrary<{ headers: Record<string, string>; how: string }> {
  const good = ctx.goodAuth[0] ?? {};
  return fc.oneof(
    fc.constant({ headers: {}, how: "no credentials" }),
    headerValue().map((v) => ({ headers: { "X-API-Key": v }, how: "odd X-API-Key" })),
    headerValue().map((v) => ({ headers: { Authorization: `Bearer ${v}` }, how: "odd bearer" })),
    headerValue().map((v) => ({ headers: { Authorization: v }, how: "odd Authorization" })),
    headerValue().map((v) => ({ headers: { Authorization: `Bearer sk_e2b_${v}` }, how: "odd access token" })),
    headerValue().map((v) => ({ headers: { ...good, "X-Team-ID": v }, how: "odd X-Team-ID" })),
    fc
      .constantFrom("e2b_", `e2b_${"0".repeat(40)}`, "sk_e2b_", "Bearer", "Basic dXNlcjo=", "e2b_\u00e9")
      .map((v) => ({ headers: { "X-API-Key": v, Authorization: v }, how: "near-miss credentials" })),
    fc
      .integer({ min: 8_000, max: 60_000 })
      .map((n) => ({ headers: { "X-API-Key": "e".repeat(n) }, how: "huge key" })),
  );
}

/** Requests for one operation: valid-looking, or broken in one or more ways. */
export function requestsFor(op: Operation, ctx: RequestContext): fc.Arbitrary<FuzzRequest> {
  const pathParams = op.params.filter((p) => p.in === "path");
  const queryParams = op.params.filter((p) => p.in === "query");
  const segments = fc.tuple(...pathParams.map((p) => pathParam(p.name, p.schema, ctx)));
  const query = fc.tuple(
    fc.tuple(...queryParams.map((p) => queryParam(p.name, p.schema, ctx))),
    fc.option(fc.tuple(oddString({ maxHuge: 2_000 }), oddString({ maxHuge: 2_000 })), { freq: 6 }),
  );
  const auth = op.secured
    ? fc.oneof(
        { weight: 5, arbitrary: fc.constantFrom(...ctx.goodAuth).map((headers) => ({ headers, how: "" })) },
        { weight: 1, arbitrary: badAuth(ctx) },
      )
    : fc.oneof(
        { weight: 5, arbitrary: fc.constant({ headers: {}, how: "" }) },
        { weight: 1, arbitrary: badAuth(ctx) },
      );
  const canHaveBody = op.method !== "GET" && op.method !== "HEAD";
  type Body = { text?: string; type?: string; how: string };
  let body: fc.Arbitrary<Body> = fc.constant({ how: "" });
  if (op.body) {
    const valid = schemaValue(op.body.schema, ctx.doc);
    const json = "application/json";
    body = fc.oneof(
      { weight: 5, arbitrary: valid.map((v) => ({ text: JSON.stringify(v), type: json, how: "" })) },
      {
        weight: 5,
        arbitrary: mutated(valid).map(({ value, how }) => ({ text: JSON.stringify(value), type: json, how })),
      },
      { weight: 2, arbitrary: badJSONText.map((text) => ({ text, type: json, how: "bad JSON" })) },
      {
        weight: 1,
        arbitrary: fc
          .tuple(valid, contentTypes)
          .map(([v, type]) => ({ text: JSON.stringify(v), type, how: `content type ${type}` })),
      },
      { weight: 1, arbitrary: fc.constant({ type: json, how: "no body" }) },
      {
        weight: 1,
        arbitrary: fc.constant({
          text: JSON.stringify({ pad: "x".repeat(ctx.maxBodyBytes) }),
          type: json,
          how: "oversized body",
        }),
      },
    );
  } else if (canHaveBody) {
    body = fc.oneof(
      { weight: 6, arbitrary: fc.constant({ how: "" }) },
      {
        weight: 1,
        arbitrary: fc
          .tuple(anyJSON, contentTypes)
          .map(([v, type]) => ({ text: JSON.stringify(v), type, how: "unexpected body" })),
      },
    );
  }
  return fc.tuple(segments, query, auth, body).map(([segs, [queryValues, extra], credentials, b]) => {
    let i = 0;
    const how: string[] = [];
    const path = op.path.replace(/\{[^}]+\}/g, () => {
      const seg = segs[i++]!;
      if (seg.how) how.push(seg.how);
      return seg.text;
    });
    const pairs = queryValues.flat();
    if (extra) pairs.push(`${encode(extra[0])}=${encode(extra[1])}`);
    const headers: Record<string, string> = { ...credentials.headers };
    if (credentials.how) how.push(credentials.how);
    if (b.type !== undefined) headers["Content-Type"] = b.type;
    if (b.how) how.push(b.how);
    return {
      method: op.method,
      target: pairs.length ? `${path}?${pairs.join("&")}` : path,
      headers,
      body: canHaveBody ? b.text : undefined,
      how,
    };
  });
}

/** Requests no operation expects: any method, odd paths, odd headers and bodies. */
export function strayRequests(ctx: RequestContext, paths: string[]): fc.Arbitrary<FuzzRequest> {
  const method = fc.constantFrom("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD", "PROPFIND");
  const path = fc.oneof(
    fc.constantFrom(...paths),
    fc.constantFrom(...paths).map((p) => p.replace(/\{[^}]+\}/g, "x")),
    fc
      .array(oddString({ maxHuge: 3_000 }), { minLength: 1, maxLength: 6 })
      .map((parts) => `/${parts.map(encode).join("/")}`),
    fc.constantFrom(...ODD_LITERALS).map((s) => `/${rawSpelling(s, /[?#]/)}`),
    fc.constantFrom(
      "//",
      "/./",
      "/../../etc/passwd",
      "/%2e%2e/%2e%2e/",
      "/v2/../sandboxes",
      "/sandboxes/",
      "/SANDBOXES",
      "/openapi.json/",
    ),
  );
  return fc
    .tuple(method, path, fc.option(headerValue()), fc.option(fc.tuple(anyJSON, contentTypes)), fc.boolean())
    .map(([m, p, key, body, authed]) => {
      const headers: Record<string, string> = authed ? { ...ctx.goodAuth[0] } : {};
      if (key !== null) headers["X-API-Key"] = key;
      const withBody = body !== null && m !== "GET" && m !== "HEAD";
      if (withBody && body[1] !== undefined) headers["Content-Type"] = body[1];
      return {
        method: m,
        target: p,
        headers,
        body: withBody ? JSON.stringify(body[0]) : undefined,
        how: ["stray request"],
      };
    });
}
