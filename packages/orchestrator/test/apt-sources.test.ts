import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import path from "node:path";
import { after, describe, test } from "node:test";
import {
  findDebianMirror,
  parseDeb822Sources,
  parseOneLineSources,
  pickDebianMirror,
  readAptSources,
} from "../src/setup/apt-sources.js";

/** Debian 12's default debian.sources, as on our machines (with snapshot comments). */
const DEBIAN_SOURCES = `Types: deb
# http://snapshot.debian.org/archive/debian/20250520T000000Z
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
# http://snapshot.debian.org/archive/debian-security/20250520T000000Z
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
`;

describe("parseDeb822Sources", () => {
  test("Debian 12's default file", () => {
    const sources = parseDeb822Sources(DEBIAN_SOURCES, "debian.sources");
    assert.equal(sources.length, 2);
    assert.deepEqual(sources[0], {
      uris: ["http://deb.debian.org/debian"],
      suites: ["bookworm", "bookworm-updates"],
      components: ["main"],
      signedBy: "/usr/share/keyrings/debian-archive-keyring.gpg",
      origin: "debian.sources",
    });
  });

  test("skips deb-src-only and disabled stanzas, and inline keys", () => {
    const text = `Types: deb-src
URIs: http://src.example/debian
Suites: bookworm
Components: main

Types: deb
URIs: http://off.example/debian
Suites: bookworm
Components: main
Enabled: no

types: deb deb-src
uris: https://mirror.example/debian/
suites: trixie
components: main contrib
signed-by:
 -----BEGIN PGP PUBLIC KEY BLOCK-----
 .
 abc
 -----END PGP PUBLIC KEY BLOCK-----
`;
    const sources = parseDeb822Sources(text, "x.sources");
    assert.equal(sources.length, 1);
    assert.deepEqual(sources[0]!.uris, ["https://mirror.example/debian"]);
    assert.deepEqual(sources[0]!.components, ["main", "contrib"]);
    assert.equal(sources[0]!.signedBy, undefined);
  });
});

describe("parseOneLineSources", () => {
  test("lines with options, comments and deb-src", () => {
    const text = `# a comment
deb [arch=amd64 signed-by=/etc/apt/keyrings/d.gpg] http://ftp.example.org/debian/ bookworm main non-free-firmware
deb-src http://ftp.example.org/debian bookworm main
deb http://security.debian.org/debian-security bookworm-security main # trailing comment
`;
    const sources = parseOneLineSources(text, "sources.list");
    assert.equal(sources.length, 2);
    assert.deepEqual(sources[0], {
      uris: ["http://ftp.example.org/debian"],
      suites: ["bookworm"],
      components: ["main", "non-free-firmware"],
      signedBy: "/etc/apt/keyrings/d.gpg",
      origin: "sources.list",
    });
    assert.deepEqual(sources[1]!.suites, ["bookworm-security"]);
  });
});

describe("pickDebianMirror", () => {
  test("the main archive and the security archive", () => {
    const mirror = pickDebianMirror(parseDeb822Sources(DEBIAN_SOURCES, "debian.sources"));
    assert.deepEqual(mirror, {
      uri: "http://deb.debian.org/debian",
      securityURI: "http://deb.debian.org/debian-security",
      signedBy: "/usr/share/keyrings/debian-archive-keyring.gpg",
      origin: "debian.sources",
    });
  });

  test("security first in the file does not become the main mirror", () => {
    const sources = parseOneLineSources(
      "deb http://sec.example/debian-security bookworm-security main\ndeb http://m.example/debian bookworm main\n",
      "sources.list",
    );
    assert.equal(pickDebianMirror(sources)?.uri, "http://m.example/debian");
  });

  test("an Ubuntu host has no Debian mirror", () => {
    const sources = parseOneLineSources(
      "deb http://archive.ubuntu.com/ubuntu jammy main universe\n",
      "sources.list",
    );
    assert.equal(pickDebianMirror(sources), undefined);
  });

  test("third-party repositories and cdroms are not Debian mirrors", () => {
    const sources = parseOneLineSources(
      [
        "deb [signed-by=/usr/share/keyrings/nodesource.gpg] https://deb.nodesource.com/node_20.x nodistro main",
        "deb cdrom:[Debian 12]/ bookworm main",
        "deb http://m.example/debian bookworm main",
      ].join("\n"),
      "sources.list",
    );
    assert.equal(pickDebianMirror(sources)?.uri, "http://m.example/debian");
  });
});

describe("findDebianMirror", () => {
  const dir = mkdtempSync("/tmp/moat-test-apt-");
  after(() => rmSync(dir, { recursive: true, force: true }));

  test("reads debian.sources before other files", async () => {
    mkdirSync(path.join(dir, "sources.list.d"), { recursive: true });
    writeFileSync(path.join(dir, "sources.list.d", "debian.sources"), DEBIAN_SOURCES);
    writeFileSync(
      path.join(dir, "sources.list.d", "a-extra.list"),
      "deb http://other.example/debian bookworm main\n",
    );
    assert.equal((await readAptSources(dir)).length, 3);
    const mirror = await findDebianMirror(dir);
    assert.equal(mirror.uri, "http://deb.debian.org/debian");
    assert.equal(mirror.origin, path.join(dir, "sources.list.d", "debian.sources"));
  });

  test("MOAT_DEBIAN_MIRROR overrides, and must be a URI", async () => {
    const saved = process.env.MOAT_DEBIAN_MIRROR;
    try {
      process.env.MOAT_DEBIAN_MIRROR = "http://local.example/debian/";
      assert.deepEqual(await findDebianMirror(dir), {
        uri: "http://local.example/debian",
        origin: "MOAT_DEBIAN_MIRROR",
      });
      process.env.MOAT_DEBIAN_MIRROR = "local.example";
      await assert.rejects(findDebianMirror(dir), /not an http\(s\), ftp or file URI/);
    } finally {
      if (saved === undefined) delete process.env.MOAT_DEBIAN_MIRROR;
      else process.env.MOAT_DEBIAN_MIRROR = saved;
    }
  });

  test("a host without a Debian archive gets an error saying what to set", async () => {
    const empty = path.join(dir, "empty");
    mkdirSync(empty);
    await assert.rejects(findDebianMirror(empty), /set MOAT_DEBIAN_MIRROR/);
  });
});
