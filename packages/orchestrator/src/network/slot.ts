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

/** Every host-side name starts with this, so leftovers are recognisable. */
export const NAME_PREFIX = "moat-";

export class Slot {
  constructor(readonly index: number) {
    if (!Number.isInteger(index) || index < 1 || index > MAX_SLOTS) {
      throw new RangeError(`slot index ${index} outside 1..${MAX_SLOTS}`);
    }
  }

  /** Namespace holding the NAT between the host address and the inner one. */
  get outerNamespace(): string {
    return `${NAME_PREFIX}n${this.index}`;
  }

  /** Namespace whose only interface gVisor takes over. */
  get guestNamespace(): string {
    return `${NAME_PREFIX}g${this.index}`;
  }

  get guestNamespacePath(): string {
    return `/var/run/netns/${this.guestNamespace}`;
  }

  /** The root-netns end of the veth into the outer namespace (≤ 15 characters). */
  get hostVeth(): string {
    return `${NAME_PREFIX}v${this.index}`;
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

/** The slot index a host-side name belongs to, or undefined for names that are not ours. */
export function slotIndexOf(name: string): number | undefined {
  const match = /^moat-[ngv](\d+)$/.exec(name);
  return match ? Number(match[1]) : undefined;
}
