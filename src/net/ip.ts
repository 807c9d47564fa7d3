// IP addresses between text and the bytes that go on the wire (SOCKS and tunnel headers, pcap
// records, CIDR matching). Pure, and importing nothing of ours: protocol/ uses it too. Validity is
// Node's (net.isIPv4/isIPv6); a zone (fe80::1%eth0) is dropped, as it is never on the wire, and is
// accepted on IPv6 only.
import net from 'node:net';

export function ipv4ToString(bytes: Buffer): string {
  return `${bytes[0]}.${bytes[1]}.${bytes[2]}.${bytes[3]}`;
}

export function ipv4ToBytes(text: string): Buffer | undefined {
  if (!net.isIPv4(text)) return undefined;
  return Buffer.from(text.split('.').map(Number));
}

/**
 * RFC 5952 text (lowercase, longest zero run compressed), except IPv4-mapped addresses, which come
 * out as `::ffff:a.b.c.d`, the form Node itself reports from getsockname()/remoteAddress.
 */
export function ipv6ToString(bytes: Buffer): string {
  const groups: number[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(bytes.readUInt16BE(i));
  if (isMapped(bytes)) return `::ffff:${ipv4ToString(bytes.subarray(12, 16))}`;
  let bestStart = -1;
  let bestLength = 1; // a single zero group is never compressed (RFC 5952 4.2.2)
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLength) {
      bestStart = i;
      bestLength = j - i;
    }
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (bestStart < 0) return hex.join(':');
  return `${hex.slice(0, bestStart).join(':')}::${hex.slice(bestStart + bestLength).join(':')}`;
}

/** Any textual IPv6 form Node accepts, as 16 bytes (an IPv4-mapped one too). */
export function ipv6ToBytes(text: string): Buffer | undefined {
  const address = text.replace(/%.*$/, '');
  if (!net.isIPv6(address)) return undefined;
  const groupsOf = (part: string): number[] =>
    part === ''
      ? []
      : part.split(':').flatMap((g) => {
          if (!g.includes('.')) return [parseInt(g, 16)];
          const [a, b, c, d] = g.split('.').map(Number);
          return [(a << 8) | b, (c << 8) | d];
        });
  const gap = address.indexOf('::');
  let groups: number[];
  if (gap < 0) {
    groups = groupsOf(address);
  } else {
    const head = groupsOf(address.slice(0, gap));
    const tail = groupsOf(address.slice(gap + 2));
    groups = [...head, ...new Array<number>(8 - head.length - tail.length).fill(0), ...tail];
  }
  if (groups.length !== 8) return undefined;
  const out = Buffer.alloc(16);
  groups.forEach((g, i) => out.writeUInt16BE(g, i * 2));
  return out;
}

const MAPPED_PREFIX = Buffer.from('00000000000000000000ffff', 'hex');

function isMapped(v6: Buffer): boolean {
  return v6.subarray(0, 12).equals(MAPPED_PREFIX);
}

/**
 * 4 bytes for IPv4, 16 for IPv6, undefined for what is no IP. An IPv4-mapped IPv6 address
 * (::ffff:a.b.c.d, what a dual-stack socket reports for an IPv4 peer) gives the IPv4 bytes: on
 * the wire that connection was IPv4.
 */
export function ipBytes(text: string): Buffer | undefined {
  const v4 = ipv4ToBytes(text);
  if (v4) return v4;
  const v6 = ipv6ToBytes(text);
  return v6 && isMapped(v6) ? v6.subarray(12) : v6;
}

/** As ipBytes, for an address known to be one (a socket's): throws a TypeError otherwise. */
export function addressBytes(address: string): Buffer {
  const bytes = ipBytes(address);
  if (!bytes) throw new TypeError(`"${address}" is not an IP address`);
  return bytes;
}

/**
 * The dotted IPv4 inside an IPv4-mapped IPv6 address (`::ffff:a.b.c.d` in any spelling), else the
 * host unchanged. A dual-stack listener reports IPv4 peers and local addresses in mapped form, and
 * an IPv4-only client cannot use an IPv6 BND address or a SOCKS4 reply carrying one.
 */
export function unmapIPv4(host: string): string {
  // Every IPv6 spelling has a colon: dotted IPv4 and names skip the IPv6 parse, a costly regex.
  if (!host.includes(':')) return host;
  const v6 = ipv6ToBytes(host);
  if (v6 === undefined || !isMapped(v6)) return host;
  return ipv4ToString(v6.subarray(12));
}
