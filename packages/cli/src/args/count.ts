import { InvalidArgumentError } from "commander";

/** Counts such as `--pool-size`: a whole number from 0. */
export function parseCount(value: string): number {
  const count = Number(value);
  if (!Number.isInteger(count) || count < 0) throw new InvalidArgumentError("expected a whole number ≥ 0");
  return count;
}
