// The SOCKS5 `ATYP ADDR PORT` triple used by requests, replies and UDP datagrams (written once, not
// per message), and host names from the wire. IP text <-> bytes is net/ip.ts.
import net from 'node:net';
import { ipv4ToString, ipv6ToBytes, ipv6ToString, unmapIPv4 } from '../net/ip.js';
import { INCOMPLETE, type Incomplete, type ProtocolError, protocolError, type Reader } from './reader.js';

/** RFC 1928 section 5 address types. */
export const ATYP = { IPV4: 0x01, DOMAIN: 0x03, IPV6: 0x04 } as const;

export type AddressType = 'ipv4' | 'ipv6' | 'domain';

export interface SocksAddress {
  host: string;
  port: number;
  addressType: AddressType;
}

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
  return encodeSocks5AddressAfter(NO_HEAD, host, port);
}

const NO_HEAD: readonly number[] = [];

/**
 * encodeSocks5Address() behind `head` (a reply's or a request's first bytes), in one buffer: the
 * reply of every connection is built here, and joining parts would copy it twice.
 */
export function encodeSocks5AddressAfter(head: readonly number[], host: string | undefined, port: number): Buffer {
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new RangeError(`port ${port} is not in 0-65535`);
  const at = head.length;
  const v4 = unmapIPv4(host || '0.0.0.0');
  if (net.isIPv4(v4)) {
    const out = Buffer.allocUnsafe(at + 7);
    out.set(head);
    out[at] = ATYP.IPV4;
    const parts = v4.split('.');
    for (let i = 0; i < 4; i++) out[at + 1 + i] = Number(parts[i]);
    out.writeUInt16BE(port, at + 5);
    return out;
  }
  const portBytes = Buffer.alloc(2);
  portBytes.writeUInt16BE(port);
  const headBytes = Buffer.from(head);
  const v6 = ipv6ToBytes(host!);
  if (v6) return Buffer.concat([headBytes, Buffer.of(ATYP.IPV6), v6, portBytes]);
  const name = Buffer.from(host!, 'utf8');
  if (name.length > 255) throw new RangeError(`domain name is ${name.length} bytes; SOCKS5 allows 255`);
  if (name.includes(0)) throw new RangeError('domain name contains NUL');
  return Buffer.concat([headBytes, Buffer.of(ATYP.DOMAIN, name.length), name, portBytes]);
}
