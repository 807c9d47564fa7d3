// SOCKS4 and SOCKS4a: pure parsers and encoders over Buffers, no I/O.
// Specs: https://www.openssh.com/txt/socks4.protocol and https://www.openssh.com/txt/socks4a.protocol
import { decodeHostname } from './address.js';
import { ipv4ToBytes, ipv4ToString, unmapIPv4 } from '../net/ip.js';
import { INCOMPLETE, type Incomplete, type ProtocolError, protocolError, Reader } from './reader.js';

export const SOCKS4_VERSION = 0x04;

export const SOCKS4_COMMAND = { CONNECT: 0x01, BIND: 0x02 } as const;

/** CD values in a reply. */
export const SOCKS4_REPLY = {
  GRANTED: 0x5a,
  REJECTED: 0x5b,
  IDENTD_UNREACHABLE: 0x5c,
  IDENTD_MISMATCH: 0x5d,
} as const;

export type Socks4ReplyCode = (typeof SOCKS4_REPLY)[keyof typeof SOCKS4_REPLY];

export interface Socks4Request {
  command: 'connect' | 'bind';
  port: number;
  /** Dotted IPv4, or for SOCKS4a the client's HOSTNAME (which the server resolves). */
  host: string;
  isSocks4a: boolean;
  userId: string;
}

export interface Socks4Limits {
  /** Longest USERID accepted, NUL excluded. */
  maxUserIdBytes?: number;
  /** Longest SOCKS4a HOSTNAME accepted, NUL excluded. */
  maxHostnameBytes?: number;
}

export type Socks4ErrorCode =
  | 'ERR_BAD_VERSION'
  | 'ERR_BAD_COMMAND'
  | 'ERR_ZERO_ADDRESS'
  | 'ERR_USERID_TOO_LONG'
  | 'ERR_HOSTNAME_TOO_LONG'
  | 'ERR_EMPTY_HOSTNAME'
  | 'ERR_BAD_HOSTNAME';

export type Socks4RequestResult =
  | Incomplete
  | { status: 'ok'; request: Socks4Request; consumed: number }
  | ProtocolError<Socks4ErrorCode>;

const REJECTED = SOCKS4_REPLY.REJECTED;

/*
 * Request:
 *   +----+----+----+----+----+----+----+----+----+----+....+----+
 *   | VN | CD | DSTPORT |      DSTIP        | USERID       |NULL|
 *   +----+----+----+----+----+----+----+----+----+----+....+----+
 *      1    1      2              4           variable       1
 * SOCKS4a: DSTIP = 0.0.0.x (x != 0), and after USERID's NULL:
 *   +----------+----+
 *   | HOSTNAME |NULL|
 *   +----------+----+
 *
 * Errors are reported as soon as the bytes seen prove the request bad, so every error's `reply` is
 * 5B. Unread bytes left in the socket turn a close into an RST that can destroy the reply in
 * flight: the server should end() and drain, not destroy(), after writing it.
 */
export function parseSocks4Request(buf: Buffer, limits: Socks4Limits = {}): Socks4RequestResult {
  const maxUserId = limits.maxUserIdBytes ?? 255;
  const maxHostname = limits.maxHostnameBytes ?? 255;
  const r = new Reader(buf);

  const version = r.u8();
  if (version === undefined) return INCOMPLETE;
  if (version !== SOCKS4_VERSION) return protocolError('ERR_BAD_VERSION', REJECTED, `version ${version} is not SOCKS4`);

  const cd = r.u8();
  if (cd === undefined) return INCOMPLETE;
  let command: Socks4Request['command'];
  if (cd === SOCKS4_COMMAND.CONNECT) command = 'connect';
  else if (cd === SOCKS4_COMMAND.BIND) command = 'bind';
  else return protocolError('ERR_BAD_COMMAND', REJECTED, `command ${cd} is not CONNECT or BIND`);

  const port = r.u16();
  if (port === undefined) return INCOMPLETE;
  const ip = r.bytes(4);
  if (ip === undefined) return INCOMPLETE;
  const isSocks4a = ip[0] === 0 && ip[1] === 0 && ip[2] === 0 && ip[3] !== 0;
  // Linux connects 0.0.0.0 to the local host: accepting it would reach services bound to loopback.
  // BIND connects nowhere: there it names the peer, and 0.0.0.0 is "any peer" (the npm socks client sends it).
  if (ip.readUInt32BE(0) === 0 && command === 'connect') {
    return protocolError('ERR_ZERO_ADDRESS', REJECTED, 'CONNECT to 0.0.0.0 is refused');
  }

  const userId = r.cstring(maxUserId);
  if (userId === 'incomplete') return INCOMPLETE;
  if (userId === 'overflow') return protocolError('ERR_USERID_TOO_LONG', REJECTED, `USERID longer than ${maxUserId} bytes`);

  let host = ipv4ToString(ip);
  if (isSocks4a) {
    const name = r.cstring(maxHostname);
    if (name === 'incomplete') return INCOMPLETE;
    if (name === 'overflow') return protocolError('ERR_HOSTNAME_TOO_LONG', REJECTED, `HOSTNAME longer than ${maxHostname} bytes`);
    if (name.length === 0) return protocolError('ERR_EMPTY_HOSTNAME', REJECTED, 'SOCKS4a HOSTNAME is empty');
    const decoded = decodeHostname(name);
    if (decoded === undefined) return protocolError('ERR_BAD_HOSTNAME', REJECTED, 'SOCKS4a HOSTNAME is not UTF-8');
    host = decoded;
  }
  return {
    status: 'ok',
    request: { command, port, host, isSocks4a, userId: userId.toString('utf8') },
    consumed: r.pos,
  };
}

/*
 * Reply (always 8 bytes; VN is 0, not 4):
 *   +----+----+----+----+----+----+----+----+
 *   | VN | CD | DSTPORT |      DSTIP        |
 *   +----+----+----+----+----+----+----+----+
 *      1    1      2              4
 * For BIND's first reply, 0.0.0.0 means "connect to the SOCKS server's own address".
 * `ipv4` may be IPv4-mapped IPv6 (as a dual-stack socket reports it); other IPv6 throws RangeError.
 */
export function encodeSocks4Reply(code: Socks4ReplyCode, port = 0, ipv4 = '0.0.0.0'): Buffer {
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new RangeError(`port ${port} is not in 0-65535`);
  const ip = ipv4ToBytes(unmapIPv4(ipv4));
  if (ip === undefined) throw new RangeError(`"${ipv4}" is not an IPv4 address; SOCKS4 replies carry only IPv4`);
  const out = Buffer.alloc(8);
  out[1] = code;
  out.writeUInt16BE(port, 2);
  ip.copy(out, 4);
  return out;
}

/**
 * The CD for an outcome: no error code means granted. SOCKS4 has a single failure code, so every
 * error (errno name or otherwise) maps to 5B.
 */
export function socks4ReplyForErrno(code: string | null | undefined): Socks4ReplyCode {
  return code ? SOCKS4_REPLY.REJECTED : SOCKS4_REPLY.GRANTED;
}
