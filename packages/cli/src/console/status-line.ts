import type { TemplateProgress } from "@moat/orchestrator";
import { beforeLogLine } from "@moat/shared";

/** debootstrap's lines about one package (`I: Retrieving bash 5.2.15-2`, `I: Unpacking libc6:amd64...`). */
const PER_PACKAGE =
  /^I: (?:(?:Retrieving|Validating) \S+ \S*\d\S*|(?:Extracting|Unpacking|Configuring) \S+\.\.\.)$/;

/**
 * Setup progress on stderr (moat setup, moat up). Steps that say many lines (debootstrap, a
 * template build's output) overwrite one status line on a terminal; in a log (CI, journald)
 * debootstrap's per-package lines are counted instead of printed. A log line written meanwhile
 * ends the status line first.
 */
export class StatusLine {
  private open = false;
  private skipped = 0;

  /** `prefix` starts every line (`moat: `). */
  constructor(
    private readonly out: NodeJS.WriteStream,
    private readonly prefix = "",
  ) {}

  /** A line that stays. */
  line(text: string): void {
    this.done();
    this.out.write(`${this.prefix}${text}\n`);
  }

  /** A line the next one replaces on a terminal; a line that stays elsewhere. */
  transient(text: string): void {
    if (!this.out.isTTY) {
      this.line(text);
      return;
    }
    this.done();
    const line = `${this.prefix}${text}`.replace(/\s+/g, " ");
    this.out.write(`\r\x1b[K${line.slice(0, (this.out.columns || 100) - 1)}`);
    this.open = true;
    beforeLogLine(() => this.clear());
  }

  /** A base template build's event: debootstrap's lines are transient. */
  template(ev: TemplateProgress, label = "template: "): void {
    const text = `${label}${ev.message}`;
    if (ev.phase === "debootstrap" && this.out.isTTY) this.transient(text);
    else if (ev.phase === "debootstrap" && PER_PACKAGE.test(ev.message)) this.skipped++;
    else this.line(text);
  }

  /** Wipes an open status line (the line that follows says how it ended) and counts the lines left out. */
  done(): void {
    this.clear();
    if (this.skipped > 0) this.out.write(`${this.prefix}template:   (${this.skipped} package steps)\n`);
    this.skipped = 0;
  }

  /** Wipes an open status line (a log line takes its place; the next update draws it again). */
  private clear(): void {
    if (!this.open) return;
    this.out.write("\r\x1b[K");
    this.open = false;
    beforeLogLine(undefined);
  }
}
