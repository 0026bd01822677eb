/**
 * `moat keys list | create <name> | revoke <keyID>`: a team's API keys. With `--team <id>` (or no
 * API key at hand) through the operator's routes and the admin token, which may revoke a team's
 * last key; otherwise as the team of the API key (E2B_API_KEY), which may not.
 */
import { Command } from "commander";
import {
  type CommandIO,
  type Connection,
  type ConnectionOptions,
  call,
  connect,
  processIO,
  requireAdminToken,
  run,
  withConnection,
} from "../admin/client.js";
import { age, safeJSON, safeText, table } from "../admin/output.js";

interface KeysOptions extends ConnectionOptions {
  team?: string;
}

interface KeyView {
  id: string;
  name: string;
  mask: { prefix: string; maskedValuePrefix: string; maskedValueSuffix: string };
  createdAt: string;
  createdBy: { id: string } | null;
  lastUsed: string | null;
}

interface TeamListItem {
  teamID: string;
  name: string;
  isDefault: boolean;
}

/** The routes and credential of the team the command acts on. */
async function keyRoutes(conn: Connection, opts: KeysOptions) {
  if (opts.team === undefined && conn.apiKey) {
    return { base: "/api-keys", auth: { apiKey: conn.apiKey }, team: "the API key's team" };
  }
  const auth = { adminToken: requireAdminToken(conn) };
  let teamID = opts.team;
  if (teamID === undefined) {
    const teams = await call<TeamListItem[]>(conn, "/admin/teams", { auth });
    teamID = teams.find((t) => t.isDefault)?.teamID;
    if (!teamID) throw new Error("there is no default team: name one with --team <teamID> (moat teams list)");
  }
  return { base: `/admin/teams/${encodeURIComponent(teamID)}/api-keys`, auth, team: `team ${teamID}` };
}

export function mask(key: KeyView): string {
  return `${key.mask.prefix}${key.mask.maskedValuePrefix}…${key.mask.maskedValueSuffix}`;
}

export function keysCommand(io: CommandIO = processIO): Command {
  const keys = new Command("keys").description("list, create and revoke a team's API keys");
  const opts = (cmd: Command) =>
    withConnection(cmd, { apiKey: true, adminToken: true }).option(
      "--team <teamID>",
      "the team (operator, with the admin token; default: the API key's team, or the default team)",
    );

  keys.addCommand(
    opts(
      new Command("list").description("the team's keys (masked), when each was made and last used"),
    ).action((o: KeysOptions) =>
      run(io, "keys list", async () => {
        const conn = await connect(o);
        const { base, auth } = await keyRoutes(conn, o);
        const list = await call<KeyView[]>(conn, base, { auth });
        if (o.json) return io.out(`${safeJSON(list)}\n`);
        io.out(
          `${table(
            ["ID", "NAME", "KEY", "CREATED", "LAST USED", "CREATED BY"],
            list.map((k) => [
              k.id,
              k.name,
              mask(k),
              age(k.createdAt),
              k.lastUsed ? age(k.lastUsed) : "never",
              k.createdBy?.id ?? "operator",
            ]),
          )}\n`,
        );
      }),
    ),
  );

  keys.addCommand(
    opts(
      new Command("create")
        .description("a new API key: printed this once, stored only as a hash")
        .argument("<name>", "what the key is for"),
    ).action((name: string, o: KeysOptions) =>
      run(io, "keys create", async () => {
        const conn = await connect(o);
        const { base, auth, team } = await keyRoutes(conn, o);
        const created = await call<KeyView & { key: string }>(conn, base, {
          method: "POST",
          body: { name },
          auth,
        });
        if (o.json) return io.out(`${safeJSON(created)}\n`);
        io.out(
          `API key ${created.id} (${safeText(created.name)}) for ${team}; shown only now:\n\nexport E2B_API_KEY=${created.key}\n`,
        );
      }),
    ),
  );

  keys.addCommand(
    opts(
      new Command("revoke")
        .description("revoke an API key: it fails from its next request on")
        .argument("<keyID>", "the key's id (moat keys list)"),
    ).action((keyID: string, o: KeysOptions) =>
      run(io, "keys revoke", async () => {
        const conn = await connect(o);
        const { base, auth } = await keyRoutes(conn, o);
        await call(conn, `${base}/${encodeURIComponent(keyID)}`, { method: "DELETE", auth });
        if (o.json) return io.out(`${safeJSON({ revoked: keyID })}\n`);
        io.out(`API key ${safeText(keyID)} revoked\n`);
      }),
    ),
  );
  return keys;
}
