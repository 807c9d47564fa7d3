// Address codecs shared by the SOCKS parsers: IPv4/IPv6 text <-> bytes, and the SOCKS5
// `ATYP ADDR PORT` triple used by requests, replies and UDP datagrams (written once, not per message).
import net from 'node:net';
import { INCOMPLETE, type Incomplete, type ProtocolError, protocolError, type Reader } from './reader.js';

/** RFC 1928 section 5 address types. */
export const ATYP = { IPV4: 0x01, DOMAIN: 0x03, IPV6: 0x04 } as const;

export type AddressType = 'ipv4' | 'ipv6' | 'domain';

export interface SocksAddress {
  host: string;
  port: number;
  addressType: AddressType;
}

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
  if (groups.slice(0, 5).every((g) => g === 0) && groups[5] === 0xffff) {
    return `::ffff:${ipv4ToString(bytes.subarray(12, 16))}`;
  }
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

/** Any textual IPv6 form Node accepts (zone id ignored: it has no place on the wire). */
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

/**
 * The dotted IPv4 inside an IPv4-mapped IPv6 address (`::ffff:a.b.c.d` in any spelling), else the
 * host unchanged. A dual-stack listener reports IPv4 peers and local addresses in mapped form, and
 * an IPv4-only client cannot use an IPv6 BND address or a SOCKS4 reply carrying one.
 */
export function unmapIPv4(host: string): string {
  const v6 = ipv6ToBytes(host);
  if (v6 === undefined || !v6.subarray(0, 12).equals(MAPPED_PREFIX)) return host;
  return ipv4ToString(v6.subarray(12));
}

const MAPPED_PREFIX = Buffer.from('00000000000000000000ffff', 'hex');

/**
 * A host name from the wire, or undefined when it cannot name a host: an embedded NUL (C resolvers
 * would truncate at it, so the name checked is not the name resolved) or bytes that are not UTF-8
 * (decoding would silently substitute U+FFFD).
 */
export function decodeHostname(bytes: Buffer): string | undefined {
  if (bytes.includes(0)) return undefined;
  const text = bytes.toString('utf8');
  return Buffer.from(text, 'utf8').equals(bytes) ? text : undefined;
}

export type AddressErrorCode = 'ERR_BAD_ATYP' | 'ERR_EMPTY_DOMAIN' | 'ERR_BAD_DOMAIN';

/*
 * RFC 1928 address, as it appears in requests, replies and UDP headers:
 *   +------+----------+----------+
 *   | ATYP | DST.ADDR | DST.PORT |
 *   +------+----------+----------+
 *   |  1   | Variable |    2     |
 *   +------+----------+----------+
 * IPv4: 4 bytes; DOMAINNAME: 1 length byte (1..255) then the name; IPv6: 16 bytes.
 */
export function readSocks5Address(r: Reader): SocksAddress | Incomplete | ProtocolError<AddressErrorCode> {
  const atyp = r.u8();
  if (atyp === undefined) return INCOMPLETE;
  let host: string;
  let addressType: AddressType;
  if (atyp === ATYP.IPV4) {
    const bytes = r.bytes(4);
    if (bytes === undefined) return INCOMPLETE;
    host = ipv4ToString(bytes);
    addressType = 'ipv4';
  } else if (atyp === ATYP.IPV6) {
    const bytes = r.bytes(16);
    if (bytes === undefined) return INCOMPLETE;
    host = ipv6ToString(bytes);
    addressType = 'ipv6';
  } else if (atyp === ATYP.DOMAIN) {
    const length = r.u8();
    if (length === undefined) return INCOMPLETE;
    // Reply 01: the request is malformed, which no more specific RFC 1928 code describes.
    if (length === 0) return protocolError('ERR_EMPTY_DOMAIN', 0x01, 'domain name of length 0');
    const bytes = r.bytes(length);
    if (bytes === undefined) return INCOMPLETE;
    const name = decodeHostname(bytes);
    if (name === undefined) return protocolError('ERR_BAD_DOMAIN', 0x01, 'domain name contains NUL or is not UTF-8');
    host = name;
    addressType = 'domain';
  } else {
    return protocolError('ERR_BAD_ATYP', 0x08, `address type 0x${atyp.toString(16).padStart(2, '0')} not supported`);
  }
  const port = r.u16();
  if (port === undefined) return INCOMPLETE;
  return { host, port, addressType };
}

/**
 * `ATYP ADDR PORT` for a host: IPv4 literal (or IPv4-mapped IPv6) -> 01, IPv6 literal -> 04,
 * anything else a domain (03). '' or undefined means 0.0.0.0. Throws RangeError for what cannot be put on the wire (a bad port,
 * a name over 255 bytes or containing NUL): those are caller bugs, not peer input.
 */
export function encodeSocks5Address(host: string | undefined, port: number): Buffer {
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new RangeError(`port ${port} is not in 0-65535`);
  const portBytes = Buffer.alloc(2);
  portBytes.writeUInt16BE(port);
  const v4 = ipv4ToBytes(unmapIPv4(host || '0.0.0.0'));
  if (v4) return Buffer.concat([Buffer.of(ATYP.IPV4), v4, portBytes]);
  const v6 = ipv6ToBytes(host!);
  if (v6) return Buffer.concat([Buffer.of(ATYP.IPV6), v6, portBytes]);
  const name = Buffer.from(host!, 'utf8');
  if (name.length > 255) throw new RangeError(`domain name is ${name.length} bytes; SOCKS5 allows 255`);
  if (name.includes(0)) throw new RangeError('domain name contains NUL');
  return Buffer.concat([Buffer.of(ATYP.DOMAIN, name.length), name, portBytes]);
}
