/** `moat teams list | create <name>`: the operator's teams (admin token). */
import { Command } from "commander";
import {
  type CommandIO,
  type ConnectionOptions,
  call,
  connect,
  processIO,
  requireAdminToken,
  run,
  withConnection,
} from "../admin/client.js";
import { age, safeJSON, safeText, table } from "../admin/output.js";

interface TeamListItem {
  teamID: string;
  name: string;
  isDefault: boolean;
  createdAt: string;
  apiKeys: number;
  sandboxes: Record<string, number>;
}

export function teamsCommand(io: CommandIO = processIO): Command {
  const teams = new Command("teams").description("list teams, create one with its first API key (operator)");
  teams.addCommand(
    withConnection(new Command("list").description("every team, its keys and sandboxes"), {
      adminToken: true,
    }).action((o: ConnectionOptions) =>
      run(io, "teams list", async () => {
        const conn = await connect(o);
        const list = await call<TeamListItem[]>(conn, "/admin/teams", {
          auth: { adminToken: requireAdminToken(conn) },
        });
        if (o.json) return io.out(`${safeJSON(list)}\n`);
        io.out(
          `${table(
            ["ID", "NAME", "KEYS", "RUNNING", "PAUSED", "CREATED"],
            list.map((t) => [
              t.teamID,
              t.isDefault ? `${t.name} (default)` : t.name,
              String(t.apiKeys),
              String((t.sandboxes.running ?? 0) + (t.sandboxes.pausing ?? 0)),
              String((t.sandboxes.paused ?? 0) + (t.sandboxes.resuming ?? 0)),
              age(t.createdAt),
            ]),
          )}\n`,
        );
      }),
    ),
  );
  teams.addCommand(
    withConnection(
      new Command("create")
        .description("a new team and its first API key (printed this once)")
        .argument("<name>", "the team's name"),
      { adminToken: true },
    ).action((name: string, o: ConnectionOptions) =>
      run(io, "teams create", async () => {
        const conn = await connect(o);
        const created = await call<{ teamID: string; name: string; apiKey: string }>(conn, "/admin/teams", {
          method: "POST",
          body: { name },
          auth: { adminToken: requireAdminToken(conn) },
        });
        if (o.json) return io.out(`${safeJSON(created)}\n`);
        io.out(
          `team ${created.teamID} (${safeText(created.name)}) created; its API key, shown only now:\n\nexport E2B_API_KEY=${created.apiKey}\n`,
        );
      }),
    ),
  );
  return teams;
}
