// The PROXY protocol (HAProxy's proxy-protocol.txt), versions 1 and 2: the header a load
// balancer writes before anything else on a connection it passes on, naming the client it came
// from. Pure: parse over the bytes received so far (incomplete, a header with the bytes it took,
// or an error with a reason), and encoders for both versions.
import net from 'node:net';
import { ipv4ToBytes, ipv4ToString, ipv6ToBytes, ipv6ToString } from '../net/ip.js';
import { INCOMPLETE, protocolError, type Incomplete, type ProtocolError } from './reader.js';

/** One end of the connection the header describes. */
export interface ProxyEndpoint {
  address: string;
  port: number;
}

/**
 * `proxy`: the connection came from `source` and was made to `destination`. `local`: the sender
 * speaks for itself (v2 LOCAL, v2 PROXY with family UNSPEC, v1 UNKNOWN): the receiver uses the
 * connection's own addresses.
 */
export type ProxyHeader =
  | { version: 1 | 2; command: 'proxy'; family: 'tcp4' | 'tcp6'; source: ProxyEndpoint; destination: ProxyEndpoint }
  | { version: 1 | 2; command: 'local' };

export type ProxyHeaderErrorCode = 'not-proxy-protocol' | 'bad-v1' | 'bad-v2' | 'unsupported' | 'too-long';

export type ProxyHeaderParse = Incomplete | { status: 'ok'; consumed: number; header: ProxyHeader } | ProtocolError<ProxyHeaderErrorCode>;

/** v1's longest line, CRLF included (the spec's 107 bytes: `PROXY UNKNOWN` with two full IPv6 addresses and ports). */
export const V1_MAX_LENGTH = 107;
/**
 * The longest v2 header taken: 16 bytes of fixed header, 216 of the largest address block (AF_UNIX),
 * and room for TLVs (ALPN, authority, unique id, SSL details). The format allows 64 KiB; a
 * balancer never sends that much before the client's first byte.
 */
export const V2_MAX_LENGTH = 4096;

/*
 * v2, after the signature (all lengths big-endian):
 *
 *   0                   1                   2                   3
 *   +-------+-------+---------------+-------------------------------+
 *   | ver=2 |  cmd  | fam   | proto |             len               |
 *   +-------+-------+---------------+-------------------------------+
 *   |  addresses (12: INET, 36: INET6, 216: UNIX) | TLVs: type(1) len(2) value  ...
 *   +-----------------------------------------------------------------
 */
export const V2_SIGNATURE = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a]);
const V1_PREFIX = Buffer.from('PROXY ', 'latin1');
const V2_FIXED = 16;
const V2_VERSION = 0x2;
const V2_COMMAND = { local: 0x0, proxy: 0x1 } as const;
const V2_FAMILY = { unspec: 0x0, inet: 0x1, inet6: 0x2, unix: 0x3 } as const;
const V2_TRANSPORT = { unspec: 0x0, stream: 0x1, dgram: 0x2 } as const;
const V2_ADDRESS_LENGTH: Record<number, number> = { [V2_FAMILY.inet]: 12, [V2_FAMILY.inet6]: 36, [V2_FAMILY.unix]: 216 };

/** Whether `buf` and `prefix` agree on their common length. */
function agrees(buf: Buffer, prefix: Buffer): boolean {
  const n = Math.min(buf.length, prefix.length);
  return buf.subarray(0, n).equals(prefix.subarray(0, n));
}

/** A PROXY header, v1 or v2, at the start of `buf`. Never throws. */
export function parseProxyHeader(buf: Buffer): ProxyHeaderParse {
  if (buf.length === 0) return INCOMPLETE;
  if (agrees(buf, V2_SIGNATURE)) return buf.length < V2_SIGNATURE.length ? INCOMPLETE : parseV2(buf);
  if (agrees(buf, V1_PREFIX)) return buf.length < V1_PREFIX.length ? INCOMPLETE : parseV1(buf);
  return protocolError('not-proxy-protocol', 0, 'the connection does not start with a PROXY protocol header');
}

const badV1 = (why: string) => protocolError('bad-v1' as const, 0, `bad PROXY v1 header: ${why}`);

function parseV1(buf: Buffer): ProxyHeaderParse {
  // Decided by the first CR or LF in the first 107 bytes, so that a verdict never changes as more bytes come.
  const window = buf.subarray(0, V1_MAX_LENGTH);
  const cr = window.indexOf(0x0d);
  const lf = window.indexOf(0x0a);
  if (lf >= 0 && (cr < 0 || lf < cr)) return badV1('LF without CR');
  if (cr < 0 || cr > V1_MAX_LENGTH - 2) {
    return buf.length >= V1_MAX_LENGTH ? protocolError('too-long', 0, `PROXY v1 header longer than ${V1_MAX_LENGTH} bytes`) : INCOMPLETE;
  }
  if (cr + 1 === buf.length) return INCOMPLETE;
  if (buf[cr + 1] !== 0x0a) return badV1('CR not followed by LF');
  const end = cr + 2;
  const line = buf.toString('latin1', V1_PREFIX.length, cr);
  const fields = line.split(' ');
  if (fields[0] === 'UNKNOWN') return { status: 'ok', consumed: end, header: { version: 1, command: 'local' } };
  if (fields[0] !== 'TCP4' && fields[0] !== 'TCP6') return badV1(`unknown protocol ${JSON.stringify(fields[0].slice(0, 16))}`);
  if (fields.length !== 5) return badV1('expected PROTO SRC DST SRCPORT DSTPORT, separated by single spaces');
  const family = fields[0] === 'TCP4' ? 'tcp4' : 'tcp6';
  const valid = family === 'tcp4' ? net.isIPv4 : net.isIPv6;
  const [, srcAddress, dstAddress, srcPort, dstPort] = fields;
  if (!valid(srcAddress) || srcAddress.includes('%')) return badV1(`source is not an ${family === 'tcp4' ? 'IPv4' : 'IPv6'} address`);
  if (!valid(dstAddress) || dstAddress.includes('%')) return badV1(`destination is not an ${family === 'tcp4' ? 'IPv4' : 'IPv6'} address`);
  const sport = parsePort(srcPort);
  const dport = parsePort(dstPort);
  if (sport === undefined || dport === undefined) return badV1('a port is not a number from 0 to 65535');
  return {
    status: 'ok',
    consumed: end,
    header: {
      version: 1,
      command: 'proxy',
      family,
      source: { address: canonical(family, srcAddress), port: sport },
      destination: { address: canonical(family, dstAddress), port: dport },
    },
  };
}

/** Decimal 0..65535, no sign, no leading zero (the spec's form, which HAProxy sends). */
function parsePort(text: string): number | undefined {
  if (!/^(0|[1-9][0-9]{0,4})$/.test(text)) return undefined;
  const port = Number(text);
  return port <= 65535 ? port : undefined;
}

/** One spelling per address, so that a header read and written again says the same. */
function canonical(family: 'tcp4' | 'tcp6', address: string): string {
  return family === 'tcp4' ? address : ipv6ToString(ipv6ToBytes(address)!);
}

const badV2 = (why: string) => protocolError('bad-v2' as const, 0, `bad PROXY v2 header: ${why}`);

function parseV2(buf: Buffer): ProxyHeaderParse {
  if (buf.length < V2_FIXED) {
    // The version nibble is known as soon as byte 12 has come: fail early on garbage.
    if (buf.length > 12 && buf[12] >> 4 !== V2_VERSION) return badV2(`version ${buf[12] >> 4}, not 2`);
    return INCOMPLETE;
  }
  const versionCommand = buf[12];
  if (versionCommand >> 4 !== V2_VERSION) return badV2(`version ${versionCommand >> 4}, not 2`);
  const command = versionCommand & 0x0f;
  if (command !== V2_COMMAND.local && command !== V2_COMMAND.proxy) return badV2(`unknown command ${command}`);
  const family = buf[13] >> 4;
  const transport = buf[13] & 0x0f;
  const length = buf.readUInt16BE(14);
  const total = V2_FIXED + length;
  if (total > V2_MAX_LENGTH) return protocolError('too-long', 0, `PROXY v2 header of ${total} bytes, more than ${V2_MAX_LENGTH}`);
  if (family > V2_FAMILY.unix) return badV2(`unknown address family ${family}`);
  if (transport > V2_TRANSPORT.dgram) return badV2(`unknown transport ${transport}`);
  const addressLength = V2_ADDRESS_LENGTH[family] ?? 0;
  if (length < addressLength) return badV2(`length ${length} is shorter than the address block (${addressLength})`);
  if (buf.length < total) return INCOMPLETE;
  // LOCAL: a health check or the balancer's own connection; what follows, if anything, means nothing.
  if (command === V2_COMMAND.local || family === V2_FAMILY.unspec) return { status: 'ok', consumed: total, header: { version: 2, command: 'local' } };
  const tlvError = checkTlvs(buf.subarray(V2_FIXED + addressLength, total));
  if (tlvError) return badV2(tlvError);
  if (family === V2_FAMILY.unix) return protocolError('unsupported', 0, 'PROXY v2 header for a UNIX socket: only TCP over IPv4 and IPv6 is forwarded');
  if (transport === V2_TRANSPORT.dgram) return protocolError('unsupported', 0, 'PROXY v2 header for a datagram (UDP) connection on a TCP listener');
  const body = buf.subarray(V2_FIXED);
  const ipLength = family === V2_FAMILY.inet ? 4 : 16;
  const toText = family === V2_FAMILY.inet ? ipv4ToString : ipv6ToString;
  return {
    status: 'ok',
    consumed: total,
    header: {
      version: 2,
      command: 'proxy',
      family: family === V2_FAMILY.inet ? 'tcp4' : 'tcp6',
      source: { address: toText(body.subarray(0, ipLength)), port: body.readUInt16BE(2 * ipLength) },
      destination: { address: toText(body.subarray(ipLength, 2 * ipLength)), port: body.readUInt16BE(2 * ipLength + 2) },
    },
  };
}

/** TLVs are not used, but each must fit: one that overruns the header means a corrupt one. */
function checkTlvs(tlvs: Buffer): string | null {
  let pos = 0;
  while (pos < tlvs.length) {
    if (pos + 3 > tlvs.length) return `a TLV's type and length (3 bytes) overrun the header at offset ${pos}`;
    const length = tlvs.readUInt16BE(pos + 1);
    if (pos + 3 + length > tlvs.length) return `a TLV of type 0x${tlvs[pos].toString(16)} and length ${length} overruns the header`;
    pos += 3 + length;
  }
  return null;
}

/** What the encoders take: a connection from `source` to `destination`, or none (LOCAL/UNKNOWN). */
export type ProxyHeaderInput = { source: ProxyEndpoint; destination: ProxyEndpoint } | null;

/**
 * Family of a pair of addresses: IPv4 when both are (IPv4-mapped IPv6 counts as IPv4), else IPv6
 * with any IPv4 written as mapped; null when either is not an IP address.
 */
function familyOf(input: { source: ProxyEndpoint; destination: ProxyEndpoint }): { family: 'tcp4' | 'tcp6'; source: Buffer; destination: Buffer } | null {
  const v4 = (address: string) => ipv4ToBytes(address.startsWith('::ffff:') && net.isIPv4(address.slice(7)) ? address.slice(7) : address);
  const src4 = v4(input.source.address);
  const dst4 = v4(input.destination.address);
  if (src4 && dst4) return { family: 'tcp4', source: src4, destination: dst4 };
  const v6 = (address: string, four: Buffer | undefined) => (four ? ipv6ToBytes(`::ffff:${ipv4ToString(four)}`) : ipv6ToBytes(address));
  const src6 = v6(input.source.address, src4);
  const dst6 = v6(input.destination.address, dst4);
  return src6 && dst6 ? { family: 'tcp6', source: src6, destination: dst6 } : null;
}

function checkPort(port: number): void {
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new RangeError(`port must be an integer from 0 to 65535, got ${port}`);
}

/** `PROXY TCP4|TCP6 SRC DST SPORT DPORT\r\n`, or `PROXY UNKNOWN\r\n` for null or non-IP addresses. */
export function encodeProxyV1(input: ProxyHeaderInput): Buffer {
  if (input === null) return Buffer.from('PROXY UNKNOWN\r\n', 'latin1');
  checkPort(input.source.port);
  checkPort(input.destination.port);
  const pair = familyOf(input);
  if (!pair) return Buffer.from('PROXY UNKNOWN\r\n', 'latin1');
  const text = pair.family === 'tcp4' ? ipv4ToString : ipv6ToString;
  const proto = pair.family === 'tcp4' ? 'TCP4' : 'TCP6';
  return Buffer.from(`PROXY ${proto} ${text(pair.source)} ${text(pair.destination)} ${input.source.port} ${input.destination.port}\r\n`, 'latin1');
}

/** A v2 header with no TLV: PROXY over TCP4/TCP6, or LOCAL for null or non-IP addresses. */
export function encodeProxyV2(input: ProxyHeaderInput): Buffer {
  if (input !== null) {
    checkPort(input.source.port);
    checkPort(input.destination.port);
  }
  const pair = input && familyOf(input);
  if (!input || !pair) {
    const local = Buffer.alloc(V2_FIXED);
    V2_SIGNATURE.copy(local);
    local[12] = (V2_VERSION << 4) | V2_COMMAND.local;
    return local;
  }
  const ipLength = pair.source.length;
  const header = Buffer.alloc(V2_FIXED + 2 * ipLength + 4);
  V2_SIGNATURE.copy(header);
  header[12] = (V2_VERSION << 4) | V2_COMMAND.proxy;
  header[13] = ((pair.family === 'tcp4' ? V2_FAMILY.inet : V2_FAMILY.inet6) << 4) | V2_TRANSPORT.stream;
  header.writeUInt16BE(2 * ipLength + 4, 14);
  pair.source.copy(header, V2_FIXED);
  pair.destination.copy(header, V2_FIXED + ipLength);
  header.writeUInt16BE(input.source.port, V2_FIXED + 2 * ipLength);
  header.writeUInt16BE(input.destination.port, V2_FIXED + 2 * ipLength + 2);
  return header;
}

/** The header of `version` for a connection (or none: LOCAL/UNKNOWN). */
export function encodeProxyHeader(version: 1 | 2, input: ProxyHeaderInput): Buffer {
  return version === 1 ? encodeProxyV1(input) : encodeProxyV2(input);
}
