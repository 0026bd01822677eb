/**
 * systrap (runsc before mid-2026) runs a monitor that wakes every 400 µs for the sandbox's whole
 * life, idle or not: `for { time.Sleep(recordingPeriod); fastpath.curState(...) }` in
 * controlFastPath. Here that is about 4.5% of a core per idle sandbox, so 22 idle sandboxes keep a
 * core busy and a node full of idle sandboxes has no CPU left (docs/performance.md). Upstream later
 * parked the monitor while the sandbox is idle.
 *
 * moat's copy of the binary stretches the period to 100 ms. The period only paces the heuristic
 * that switches systrap's spinning "fast paths" on and off from the latencies it recorded; it is
 * not a timeout and nothing waits for it, so a longer one makes that switch adapt more slowly and
 * changes nothing else.
 *
 * The call is found by its machine code (Go 1.22, amd64), which must occur exactly once:
 *   shl rcx; mov [rip+x], ecx       fastPathContextLimit = uint32(GOMAXPROCS(0) * 2)
 *   mov eax, 400000; call rel32     time.Sleep(recordingPeriod)
 * Any other build (another compiler, another version, the fixed code) does not match and is left
 * as it is.
 */

/** `shl rcx; mov dword [rip+disp32], ecx`; the four bytes of disp32 follow. */
const PREFIX = Buffer.from([0x48, 0xd1, 0xe1, 0x89, 0x0d]);
const DISP_BYTES = 4;
/** `mov eax, imm32` with imm32 = 400,000 ns, then the opcode of `call rel32`. */
const SLEEP = Buffer.from([0xb8, 0x80, 0x1a, 0x06, 0x00, 0xe8]);
export const STOCK_PERIOD_NS = 400_000;
export const PATCHED_PERIOD_NS = 100_000_000;

/** Offsets of the imm32 of every `mov eax, 400000` that matches the whole pattern. */
export function findIdleMonitorSleeps(binary: Buffer): number[] {
  const found: number[] = [];
  for (let at = binary.indexOf(SLEEP); at !== -1; at = binary.indexOf(SLEEP, at + 1)) {
    const prefixAt = at - DISP_BYTES - PREFIX.length;
    if (prefixAt >= 0 && binary.subarray(prefixAt, prefixAt + PREFIX.length).equals(PREFIX)) {
      found.push(at + 1);
    }
  }
  return found;
}

/**
 * A copy of `binary` whose monitor sleeps PATCHED_PERIOD_NS, or undefined when the pattern is not
 * there exactly once (then patching could hit the wrong code, so nothing is changed).
 */
export function patchIdleMonitor(binary: Buffer): Buffer | undefined {
  const sites = findIdleMonitorSleeps(binary);
  if (sites.length !== 1) return undefined;
  const patched = Buffer.from(binary);
  patched.writeUInt32LE(PATCHED_PERIOD_NS, sites[0]!);
  return patched;
}
