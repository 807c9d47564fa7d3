// The proxy's own host as a destination: loopback, "this host", link-local (where clouds serve
// instance metadata, 169.254.169.254) and every address on the host's interfaces. Authenticated
// is not trusted with the host, so a proxy that listens beyond loopback refuses these unless an
// allow rule names them (rules.ts, evaluateAccess).
import net from 'node:net';
import os from 'node:os';

/** The ranges that are the host whatever its interfaces: [network, prefix, family]. */
export const HOST_RANGES: ReadonlyArray<readonly [string, number, 'ipv4' | 'ipv6']> = [
  ['127.0.0.0', 8, 'ipv4'],
  // Linux connects 0.0.0.0 to the local host; the rest of 0/8 is "this network".
  ['0.0.0.0', 8, 'ipv4'],
  ['169.254.0.0', 16, 'ipv4'],
  ['::1', 128, 'ipv6'],
  // The unspecified address reaches the local host as 0.0.0.0 does.
  ['::', 128, 'ipv6'],
  ['fe80::', 10, 'ipv6'],
];

/**
 * The host ranges plus `own` (the interface addresses). IPv4 entries are added as IPv4 only: a
 * BlockList checks an IPv4-mapped IPv6 address (::ffff:127.0.0.1) against its IPv4 entries.
 */
export function hostBlockList(own: readonly string[]): net.BlockList {
  const list = new net.BlockList();
  for (const [network, prefix, family] of HOST_RANGES) list.addSubnet(network, prefix, family);
  for (const address of own) {
    const family = net.isIP(address);
    if (family !== 0) list.addAddress(address, family === 4 ? 'ipv4' : 'ipv6');
  }
  return list;
}

/** Whether `list` covers `ip`; a text that is no IP is not covered (callers pass resolved addresses). */
export function blockListCovers(list: net.BlockList, ip: string): boolean {
  const family = net.isIP(ip);
  return family !== 0 && list.check(ip, family === 4 ? 'ipv4' : 'ipv6');
}

export function interfaceAddresses(): string[] {
  return Object.values(os.networkInterfaces()).flatMap((list) => (list ?? []).map((entry) => entry.address));
}

export interface HostTestOptions {
  /** The host's own addresses; default: every interface's (os.networkInterfaces). */
  addresses?: () => string[];
  /** How long one reading of the interfaces is used, ms: reading them costs tens of µs, and they change rarely (DHCP, a new bridge). */
  refreshMs?: number;
  now?: () => number;
}

/** `(ip) => boolean`: whether a destination IP is this host, with the interfaces read again at most every refreshMs. */
export function hostAddressTest(options: HostTestOptions = {}): (ip: string) => boolean {
  const { addresses = interfaceAddresses, refreshMs = 5_000, now = () => performance.now() } = options;
  let list = hostBlockList([]);
  let readAt = -Infinity;
  let known: string[] = [];
  return (ip) => {
    if (now() - readAt >= refreshMs) {
      readAt = now();
      try {
        known = addresses();
      } catch {
        // The interfaces could not be read this time: keep the last reading, and the fixed ranges.
      }
      list = hostBlockList(known);
    }
    return blockListCovers(list, ip);
  };
}
