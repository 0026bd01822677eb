/**
 * Strings that break naive parsers: huge, unicode of every plane, control characters, path
 * tricks, numbers that are not quite numbers. Used for JSON fields, query values, path segments
 * and header values alike (headers only take the latin1 ones: `headerValue`).
 */
import fc from "fast-check";

/** Shapes a careless parser mishandles, as literal text. */
export const ODD_LITERALS = [
  "",
  " ",
  "\t",
  "0",
  "-1",
  "-0",
  "1.5",
  "1e309",
  "-1e309",
  "NaN",
  "Infinity",
  "9007199254740993",
  "2147483648",
  "99999999999999999999999",
  "0x10",
  "true",
  "null",
  "undefined",
  "[]",
  "{}",
  "__proto__",
  "constructor",
  "toString",
  ".",
  "..",
  "../..",
  "/",
  "//",
  "~",
  "~root",
  "%",
  "%%",
  "%zz",
  "%2e%2e",
  "%2F",
  "%00",
  "a\u0000b",
  "\u0000",
  "\r\n",
  "\u202e",
  "\ufeff",
  "\ud800",
  "\udfff",
  "😀",
  "é",
  "Ｅ",
  "ǅ",
  "'; drop table teams; --",
  "<script>",
  // biome-ignore lint/suspicious/noTemplateCurlyInString: the literal text is the point
  "${x}",
  "*",
  "?",
  "#",
  "&",
  "=",
  ",",
  "a,b,,",
  "running,paused,bogus",
  "1970-01-01T00:00:00Z",
  "9999-12-31T23:59:59Z",
  "2024-02-30T00:00:00Z",
  "-000001-01-01T00:00:00Z",
];

/** Any string, with the odd ones and huge ones well represented. */
export function oddString(options: { maxHuge?: number } = {}): fc.Arbitrary<string> {
  const maxHuge = options.maxHuge ?? 100_000;
  return fc.oneof(
    { weight: 3, arbitrary: fc.constantFrom(...ODD_LITERALS) },
    { weight: 3, arbitrary: fc.string({ maxLength: 40 }) },
    { weight: 2, arbitrary: fc.string({ unit: "grapheme", maxLength: 20 }) },
    { weight: 2, arbitrary: fc.string({ unit: "binary", maxLength: 20 }) },
    { weight: 1, arbitrary: fc.string({ unit: "binary-ascii", maxLength: 20 }) },
    {
      weight: 1,
      arbitrary: fc
        .tuple(
          fc.constantFrom("a", "é", "😀", "/", "%", "\u0000", "../"),
          fc.integer({ min: 256, max: maxHuge }),
        )
        .map(([unit, n]) => unit.repeat(Math.ceil(n / unit.length))),
    },
  );
}

/** Header values: only latin1 without control characters can be sent at all. */
export function headerValue(): fc.Arbitrary<string> {
  return oddString({ maxHuge: 6_000 }).map((s) =>
    // biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what is removed
    [...s].map((ch) => (/[\u0000-\u001f\u007f]|[^\u0000-\u00ff]/.test(ch) ? "?" : ch)).join(""),
  );
}

/** Numbers a JSON field may carry that a schema for small integers does not expect. */
export const oddNumber: fc.Arbitrary<number> = fc.oneof(
  fc.constantFrom(
    0,
    -1,
    1.5,
    -0,
    2 ** 31,
    2 ** 31 - 1,
    -(2 ** 31),
    2 ** 53,
    2 ** 53 + 2,
    1e308,
    -1e308,
    5e-324,
  ),
  fc.integer(),
  fc.double({ noNaN: true, noDefaultInfinity: true }),
);

/** Any JSON value, of every type, shallow. */
export const anyJSON: fc.Arbitrary<unknown> = fc.oneof(
  fc.constant(null),
  fc.boolean(),
  oddNumber,
  oddString({ maxHuge: 5_000 }),
  fc.array(fc.oneof(fc.integer(), fc.string({ maxLength: 5 })), { maxLength: 3 }),
  fc.dictionary(fc.string({ maxLength: 5 }), fc.oneof(fc.integer(), fc.string({ maxLength: 5 })), {
    maxKeys: 3,
  }),
);

/** Request bodies that are not JSON, or JSON that parsers choke on. */
export const badJSONText: fc.Arbitrary<string> = fc.oneof(
  fc.constantFrom(
    "",
    "{",
    "}",
    "{not json",
    '{"a":}',
    "[1,2",
    "nul",
    "NaN",
    "Infinity",
    "1e999999",
    "-",
    '"unterminated',
    '{"a":1}{"b":2}',
    '{"a":1} trailing',
    "\ufeff{}",
    '{"__proto__":{"polluted":true}}',
    '{"constructor":{"prototype":{"polluted":true}}}',
    '{"templateID":"base","templateID":{"x":1}}',
    '"\\ud800"',
    "\u0000",
  ),
  fc.integer({ min: 1_000, max: 200_000 }).map((depth) => "[".repeat(depth) + "]".repeat(depth)),
  fc.integer({ min: 1_000, max: 100_000 }).map((depth) => `${'{"a":'.repeat(depth)}1${"}".repeat(depth)}`),
  fc.integer({ min: 1, max: 50_000 }).map((depth) => "[".repeat(depth)),
  fc.string({ unit: "binary", maxLength: 200 }),
);

/** Content types other than the one a JSON route wants, and odd spellings of it. */
export const contentTypes: fc.Arbitrary<string | undefined> = fc.constantFrom(
  undefined,
  "",
  "text/plain",
  "application/x-www-form-urlencoded",
  "multipart/form-data; boundary=xyz",
  "multipart/form-data",
  "application/octet-stream",
  "application/json; charset=utf-16",
  "application/json; charset=bogus",
  "application/jsonx",
  "APPLICATION/JSON",
  "application/json;;;",
  "application/problem+json",
  "*/*",
  "application/json, text/plain",
);
