import assert from "node:assert/strict";
import type { IncomingMessage } from "node:http";
import { describe, test } from "node:test";
import type { CatalogEntry } from "@moat/shared";
import { checkResumeAllowed, checkTrafficToken, tokensEqual } from "../src/access.js";
import {
  InvalidRouteError,
  PortClosedError,
  ReservedPathError,
  renderError,
  requestIdOf,
  SandboxNotFoundError,
  TrafficTokenInvalidError,
  TrafficTokenMissingError,
  wantsHTML,
} from "../src/errors.js";
import {
  dashboardRedirect,
  hostnameOf,
  isReservedEnvdPath,
  isSharedHost,
  normalisePath,
  resolveRoute,
} from "../src/routing.js";

const DOMAIN = "moat.local";

function route(host: string | undefined, id?: string, port?: string) {
  return resolveRoute({ host, sandboxIDHeader: id, portHeader: port }, DOMAIN);
}

function routeError(host: string | undefined, id?: string, port?: string): string {
  try {
    route(host, id, port);
  } catch (error) {
    assert.ok(error instanceof InvalidRouteError, `an InvalidRouteError, got ${error}`);
    assert.equal(error.status, 400);
    return error.message;
  }
  assert.fail(`host ${host} with headers ${id}/${port} should not route`);
}

describe("hostnameOf", () => {
  test("drops the port, brackets, case and a trailing dot", () => {
    assert.equal(hostnameOf("localhost:3002"), "localhost");
    assert.equal(hostnameOf("127.0.0.1"), "127.0.0.1");
    assert.equal(hostnameOf("[::1]:3002"), "::1");
    assert.equal(hostnameOf("::1"), "::1");
    assert.equal(hostnameOf("8000-ABC.Moat.Local.:80"), "8000-abc.moat.local");
    assert.equal(hostnameOf(undefined), "");
  });

  test("shared hosts: localhost, IP literals, sandbox.<domain>", () => {
    for (const host of ["localhost", "127.0.0.1", "10.0.0.5", "::1", "sandbox.moat.local"]) {
      assert.ok(isSharedHost(host, DOMAIN), host);
    }
    for (const host of ["8000-abc.moat.local", "sandbox.other.dev", "moat.local", "localhost.evil", ""]) {
      assert.ok(!isSharedHost(host, DOMAIN), host);
    }
  });
});

describe("resolveRoute", () => {
  test("headers on localhost, an IP literal or sandbox.<domain>", () => {
    for (const host of [
      "localhost:3002",
      "127.0.0.1:3002",
      "[::1]:3002",
      "192.168.1.5",
      "sandbox.moat.local",
    ]) {
      assert.deepEqual(route(host, "abc123", "49983"), {
        kind: "sandbox",
        sandboxID: "abc123",
        port: 49983,
        via: "headers",
      });
    }
  });

  test("host form <port>-<sandboxID>.<anything>", () => {
    assert.deepEqual(route("8000-abc123.moat.local"), {
      kind: "sandbox",
      sandboxID: "abc123",
      port: 8000,
      via: "host",
    });
    assert.deepEqual(route("49983-xyz.some.other.domain:443"), {
      kind: "sandbox",
      sandboxID: "xyz",
      port: 49983,
      via: "host",
    });
  });

  test("on a sandbox host the host wins over routing headers", () => {
    assert.deepEqual(route("8000-abc.moat.local", "other", "49983"), {
      kind: "sandbox",
      sandboxID: "abc",
      port: 8000,
      via: "host",
    });
  });

  test("a shared host without headers is the proxy itself", () => {
    assert.deepEqual(route("localhost:3002"), { kind: "proxy" });
    assert.deepEqual(route("127.0.0.1"), { kind: "proxy" });
    assert.deepEqual(route("sandbox.moat.local"), { kind: "proxy" });
  });

  test("a missing partner header is an error", () => {
    assert.match(routeError("localhost", "abc", undefined), /Missing header: E2b-Sandbox-Port/);
    assert.match(routeError("localhost", undefined, "49983"), /Missing header: E2b-Sandbox-Id/);
    assert.match(routeError("localhost", "  ", "49983"), /Missing header: E2b-Sandbox-Id/);
  });

  test("bad sandbox IDs", () => {
    for (const id of ["ABC", "abc-def", "abc_def", "a.b", "ab c", "é"]) {
      assert.match(routeError("localhost", id, "49983"), /Invalid sandbox ID/, id);
    }
    assert.match(routeError("8000-abc_def.moat.local"), /Invalid sandbox ID/);
    assert.match(routeError("8000-abc-def.moat.local"), /Invalid sandbox ID/);
  });

  test("bad ports", () => {
    for (const port of ["0", "65536", "99999", "-1", "80a", "8.0", "1e3", "123456"]) {
      assert.match(routeError("localhost", "abc", port), /Invalid sandbox port/, port);
    }
    assert.match(routeError("0-abc.moat.local"), /Invalid sandbox port/);
    assert.match(routeError("http-abc.moat.local"), /Invalid sandbox port/);
    assert.deepEqual(route("localhost", "abc", "65535"), {
      kind: "sandbox",
      sandboxID: "abc",
      port: 65535,
      via: "headers",
    });
    assert.deepEqual(route("localhost", "abc", "1"), {
      kind: "sandbox",
      sandboxID: "abc",
      port: 1,
      via: "headers",
    });
  });

  test("unroutable hosts", () => {
    for (const host of [
      "example.com",
      "abc.moat.local",
      "-abc.moat.local",
      "8000-abc",
      "8000-abc.",
      "moat",
      undefined,
    ]) {
      assert.match(routeError(host), /names no sandbox/, String(host));
    }
    assert.match(
      routeError("proxy.example.com", "abc", "49983"),
      /routing headers are honoured only when the Host/,
    );
  });
});

describe("isReservedEnvdPath", () => {
  test("envd's internal paths in every spelling", () => {
    for (const path of [
      "/init",
      "/freeze",
      "/unfreeze",
      "/fsfreeze",
      "/fsthaw",
      "/collapse",
      "/upgrade",
      "/init/",
      "//init",
      "/./init",
      "/files/../init",
      "/INIT",
      "/%69nit",
      "/init?x=1",
      "http://10.0.0.1:49983/init",
    ]) {
      assert.ok(isReservedEnvdPath(49983, path), path);
    }
  });

  test("the data plane and other ports are not reserved", () => {
    for (const path of [
      "/",
      "/health",
      "/files",
      "/files?path=/init",
      "/process.Process/Start",
      "/initx",
      "/env/init",
    ]) {
      assert.ok(!isReservedEnvdPath(49983, path), path);
    }
    assert.ok(!isReservedEnvdPath(8000, "/init"));
  });

  test("normalisePath", () => {
    assert.equal(normalisePath("/a//b/../c/?q"), "/a/c");
    assert.equal(normalisePath("/%zz"), "/%zz");
  });
});

describe("access checks", () => {
  const entry: CatalogEntry = {
    sandboxID: "abc",
    state: "running",
    hostAddress: "10.11.0.2",
    envdAccessToken: "envd-secret",
    trafficAccessToken: "traffic-secret",
    autoResume: true,
  };

  test("tokensEqual", () => {
    assert.ok(tokensEqual("a", "a"));
    assert.ok(!tokensEqual("a", "b"));
    assert.ok(!tokensEqual("a", "aa"));
  });

  test("traffic token on non-envd ports; envd's port is exempt", () => {
    assert.ok(checkTrafficToken(entry, 8000, undefined) instanceof TrafficTokenMissingError);
    assert.ok(checkTrafficToken(entry, 8000, "") instanceof TrafficTokenMissingError);
    assert.ok(checkTrafficToken(entry, 8000, "wrong") instanceof TrafficTokenInvalidError);
    assert.equal(checkTrafficToken(entry, 8000, "traffic-secret"), undefined);
    assert.equal(checkTrafficToken(entry, 49983, undefined), undefined);
    assert.equal(checkTrafficToken({ ...entry, trafficAccessToken: undefined }, 8000, undefined), undefined);
  });

  test("resuming a secured sandbox through envd needs a token", () => {
    const none = { accessToken: undefined, trafficToken: undefined };
    assert.equal(checkResumeAllowed(entry, 49983, none)?.status, 403);
    assert.equal(checkResumeAllowed(entry, 49983, { ...none, accessToken: "wrong" })?.status, 403);
    assert.equal(checkResumeAllowed(entry, 49983, { ...none, accessToken: "envd-secret" }), undefined);
    assert.equal(checkResumeAllowed(entry, 49983, { ...none, trafficToken: "traffic-secret" }), undefined);
    assert.equal(checkResumeAllowed({ ...entry, envdAccessToken: undefined }, 49983, none), undefined);
    assert.equal(checkResumeAllowed(entry, 8000, none), undefined);
  });
});

describe("error bodies", () => {
  function json(error: Parameters<typeof renderError>[0]) {
    return JSON.parse(renderError(error, false).body.toString());
  }

  test("the JSON E2B's proxy sends", () => {
    assert.deepEqual(json(new SandboxNotFoundError("abc")), {
      message: "The sandbox was not found",
      sandboxId: "abc",
      code: 502,
    });
    assert.deepEqual(json(new PortClosedError("abc", 8000)), {
      sandboxId: "abc",
      message: "The sandbox is running but port is not open",
      port: 8000,
      code: 502,
    });
    assert.deepEqual(json(new TrafficTokenMissingError("abc")), {
      sandboxId: "abc",
      message:
        "Sandbox is secured with traffic access token. Token header 'e2b-traffic-access-token' is missing",
      code: 403,
    });
    const reserved = json(new ReservedPathError("/init"));
    assert.equal(reserved.path, "/init");
    assert.equal(reserved.code, 404);
    assert.match(reserved.message, /^This endpoint is reserved/);
  });

  test("browsers get an HTML page that escapes what it shows", () => {
    assert.ok(wantsHTML("text/html,application/xhtml+xml,*/*;q=0.8"));
    assert.ok(!wantsHTML("application/json"));
    assert.ok(!wantsHTML(undefined));
    const page = renderError(new InvalidRouteError("Invalid sandbox ID '<script>'"), true);
    assert.equal(page.headers["content-type"], "text/html; charset=utf-8");
    assert.match(page.body.toString(), /&#60;script&#62;/);
    assert.doesNotMatch(page.body.toString(), /<script>/);
  });

  test("an error carries the request's id: the client's well-formed one, else one made for it", () => {
    const error = new InvalidRouteError("bad route");
    const request = (id?: string) =>
      ({ headers: id === undefined ? {} : { "x-request-id": id } }) as IncomingMessage;
    const kept = renderError(error, false, requestIdOf(request("client-7")));
    assert.equal(kept.headers["x-request-id"], "client-7");
    assert.deepEqual(JSON.parse(kept.body.toString()), {
      message: "bad route",
      code: 400,
      requestId: "client-7",
    });
    for (const bad of [undefined, "has space", "<script>", "x".repeat(200)]) {
      const made = renderError(error, true, requestIdOf(request(bad)));
      const id = String(made.headers["x-request-id"]);
      assert.match(id, /^[0-9a-f-]{36}$/, String(bad));
      assert.match(made.body.toString(), new RegExp(`<dd>${id}</dd>`));
      assert.doesNotMatch(made.body.toString(), /<script>/);
    }
    // One request, one id: its log line and its answer say the same.
    const req = request();
    assert.equal(requestIdOf(req), requestIdOf(req));
  });
});

describe("dashboardRedirect", () => {
  const api = "http://127.0.0.1:3000/dashboard";
  const redirect = (host: string, target: string, method = "GET") =>
    dashboardRedirect({ host, method, target }, "moat.local", api);

  test("the E2B CLI's link on the bare domain goes to the API's dashboard, path and query kept", () => {
    assert.equal(
      redirect("moat.local", "/dashboard/inspect/sandbox/abc123"),
      `${api}/inspect/sandbox/abc123`,
    );
    assert.equal(redirect("MOAT.local.:443", "/dashboard"), api);
    assert.equal(redirect("moat.local", "/dashboard?x=1"), `${api}?x=1`);
    assert.equal(redirect("moat.local", "/dashboard/", "HEAD"), `${api}/`);
  });

  test("never on a sandbox's host, another host, another path or method, or without a dashboard", () => {
    assert.equal(redirect("49983-abc123.moat.local", "/dashboard/inspect/sandbox/abc123"), undefined);
    assert.equal(redirect("sandbox.moat.local", "/dashboard"), undefined);
    assert.equal(redirect("evil.example", "/dashboard"), undefined);
    assert.equal(redirect("moat.local", "/dashboardx"), undefined);
    assert.equal(redirect("moat.local", "/dashboard@evil.example"), undefined);
    assert.equal(redirect("moat.local", "//evil.example/dashboard"), undefined);
    assert.equal(redirect("moat.local", "/files"), undefined);
    assert.equal(redirect("moat.local", "/dashboard", "POST"), undefined);
    assert.equal(
      dashboardRedirect({ host: "moat.local", method: "GET", target: "/dashboard" }, "moat.local", undefined),
      undefined,
    );
  });

  test("the target keeps the API's origin whatever the path holds", () => {
    for (const target of [
      "/dashboard/..//evil.example",
      "/dashboard/%2F%2Fevil.example",
      "/dashboard/\\evil.example",
    ]) {
      const location = redirect("moat.local", target);
      assert.ok(location);
      assert.equal(new URL(location).origin, "http://127.0.0.1:3000", target);
    }
  });
});
