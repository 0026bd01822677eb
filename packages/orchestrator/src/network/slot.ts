/**
 * A network slot: the host-side identity of one sandbox's network, derived from one index so that
 * names and addresses never need a lookup and a crashed run's leftovers can be found by name.
 *
 * Layout (E2B's model, adapted to gVisor, which takes over every interface in its namespace):
 *
 *   root netns                 outer netns moat-n<i>               guest netns moat-g<i>
 *   moat-v<i> 10.12.a.b/30 ──veth── vpeer 10.12.a.b+1/30
 *   route 10.11.x.y → vpeer        NAT 10.11.x.y ⇄ 169.254.0.21
 *                                  tap0 169.254.0.22/30 ──veth── eth0 169.254.0.21/30 (gVisor's)
 *
 * Every sandbox has the same inner address, so a memory snapshot restores into any slot; the host
 * reaches it at its slot's unique host address.
 */
export const INNER_ADDRESS = "169.254.0.21";
export const INNER_GATEWAY = "169.254.0.22";
export const INNER_PREFIX = 30;

/** Host addresses (one per sandbox) come from 10.11.0.0/16; transfer /30s from 10.12.0.0/16. */
export const HOST_ADDRESS_CIDR = "10.11.0.0/16";
export const TRANSFER_CIDR = "10.12.0.0/16";
export const MAX_SLOTS = 16_383;

/**
 * Every host-side name starts with this, so leftovers are recognisable. The named namespaces live
 * in /var/run/netns, which every network namespace of the host shares: several nodes on one kernel
 * (each in its own network namespace) each take a prefix of their own (`--name-prefix`), and a
 * node only ever touches names of its own prefix.
 */
export const NAME_PREFIX = "moat-";

/** The root-netns end of a slot's veth: links are per network namespace, so every node keeps this one. */
const VETH_PREFIX = "moat-v";

/**
 * A node's name prefix: letters, digits and '-', starting with a letter, at most 20 characters
 * (names stay short, and a prefix can never be read as another's name plus a slot number when it
 * ends in '-').
 */
export const NAME_PREFIX_PATTERN = /^[a-z][a-z0-9-]{0,19}$/;

/** The prefix if it is usable, else an error naming what is accepted. */
export function checkNamePrefix(prefix: string, name = "namePrefix"): string {
  if (!NAME_PREFIX_PATTERN.test(prefix) || !prefix.endsWith("-")) {
    throw new Error(
      `${name} must be 2 to 20 lowercase letters, digits or '-', starting with a letter and ending in '-' (e.g. moat-a-), got '${prefix}'`,
    );
  }
  return prefix;
}

export class Slot {
  constructor(
    readonly index: number,
    /** The node's prefix of its named namespaces (see NAME_PREFIX). */
    readonly namePrefix = NAME_PREFIX,
  ) {
    if (!Number.isInteger(index) || index < 1 || index > MAX_SLOTS) {
      throw new RangeError(`slot index ${index} outside 1..${MAX_SLOTS}`);
    }
  }

  /** Namespace holding the NAT between the host address and the inner one. */
  get outerNamespace(): string {
    return `${this.namePrefix}n${this.index}`;
  }

  /** Namespace whose only interface gVisor takes over. */
  get guestNamespace(): string {
    return `${this.namePrefix}g${this.index}`;
  }

  get guestNamespacePath(): string {
    return `/var/run/netns/${this.guestNamespace}`;
  }

  /** The root-netns end of the veth into the outer namespace (≤ 15 characters). */
  get hostVeth(): string {
    return `${VETH_PREFIX}${this.index}`;
  }

  /** Where the host (and the proxy) reaches this sandbox. */
  get hostAddress(): string {
    return `10.11.${this.index >> 8}.${this.index & 255}`;
  }

  /** Root-netns side of the transfer /30. */
  get transferHostIP(): string {
    return transferIP(this.index, 1);
  }

  /** Outer-namespace side of the transfer /30. */
  get transferPeerIP(): string {
    return transferIP(this.index, 2);
  }
}

function transferIP(index: number, offset: 1 | 2): string {
  const n = index * 4 + offset;
  return `10.12.${(n >> 8) & 255}.${n & 255}`;
}

/**
 * The slot index a named namespace belongs to, or undefined for names that are not this node's
 * (another prefix's, a probe's, anything else).
 */
export function slotIndexOfNamespace(name: string, namePrefix = NAME_PREFIX): number | undefined {
  if (!name.startsWith(namePrefix)) return undefined;
  const match = /^[ng](\d+)$/.exec(name.slice(namePrefix.length));
  return match ? Number(match[1]) : undefined;
}

/** The slot index a link of the node's own network namespace belongs to, or undefined. */
export function slotIndexOfLink(name: string): number | undefined {
  const match = /^moat-v(\d+)$/.exec(name);
  return match ? Number(match[1]) : undefined;
}
