// The tunnel's binary headers (docs/tunnel-protocol.md): the preamble every connection starts with,
// the data hello, and the server's reply on a data connection (START or ERROR). Pure encoders and
// incremental parsers over Buffers.
import net from 'node:net';
import { ipv4ToBytes, ipv4ToString, ipv6ToBytes, ipv6ToString, unmapIPv4 } from '../net/ip.js';
import { INCOMPLETE, type Incomplete, type ProtocolError, protocolError, Reader } from '../protocol/reader.js';

export const PROTOCOL_VERSION = 1;
export const SUPPORTED_VERSIONS: readonly number[] = [1];

// ---------------------------------------------------------------------------------------------
// Preamble: the first 8 bytes of every connection a client opens to the server.
//
//   +--------+---------+------+----------+
//   | "SPTN" | VERSION | KIND | RESERVED |
//   |   4    |    1    |  1   |  2 (00)  |
//   +--------+---------+------+----------+
//   KIND: 'C' (0x43) control connection, 'D' (0x44) data connection, 'M' (0x4D) mux connection
//   (only from a client the server asked for one). Bytes 0-5 mean the same in every version, so a
//   server can always tell which kind of error reply an old or new peer reads.

export const MAGIC = Buffer.from('SPTN', 'latin1');
export const PREAMBLE_LENGTH = 8;
export const KIND = { CONTROL: 0x43, DATA: 0x44, MUX: 0x4d } as const;
export type ConnectionKind = 'control' | 'data' | 'mux';
const KIND_OF: Record<number, ConnectionKind> = { [KIND.CONTROL]: 'control', [KIND.DATA]: 'data', [KIND.MUX]: 'mux' };

export const NONCE_LENGTH = 32;
export const SESSION_ID_LENGTH = 16;
export const MAC_LENGTH = 32;
/** Session id, request id, MAC. */
export const DATA_HELLO_LENGTH = SESSION_ID_LENGTH + 8 + MAC_LENGTH;

/** Error codes of a data connection's ERROR reply (one byte on the wire). */
export const DATA_ERROR = {
  BAD_HEADER: 1,
  UNSUPPORTED_VERSION: 2,
  UNKNOWN_SESSION: 3,
  BAD_MAC: 4,
  UNKNOWN_REQUEST: 5,
  SHUTTING_DOWN: 6,
  SURPLUS: 7,
  PROTOCOL: 8,
} as const;
export type DataErrorName = 'bad-header' | 'unsupported-version' | 'unknown-session' | 'bad-mac' | 'unknown-request' | 'shutting-down' | 'surplus' | 'protocol';
const DATA_ERROR_NAMES: Record<number, DataErrorName> = {
  1: 'bad-header',
  2: 'unsupported-version',
  3: 'unknown-session',
  4: 'bad-mac',
  5: 'unknown-request',
  6: 'shutting-down',
  7: 'surplus',
  8: 'protocol',
};
export const dataErrorName = (code: number): string => DATA_ERROR_NAMES[code] ?? `error-${code}`;

export function encodePreamble(kind: ConnectionKind, version = PROTOCOL_VERSION): Buffer {
  const out = Buffer.alloc(PREAMBLE_LENGTH);
  MAGIC.copy(out, 0);
  out[4] = version;
  out[5] = kind === 'control' ? KIND.CONTROL : kind === 'data' ? KIND.DATA : KIND.MUX;
  return out;
}

export type StartCode = 'bad-magic' | 'unsupported-version' | 'bad-kind' | 'bad-preamble' | 'bad-request-id';

export type ConnectionStart =
  | { status: 'ok'; kind: 'control'; version: number; consumed: number }
  | { status: 'ok'; kind: 'data' | 'mux'; version: number; sessionId: Buffer; requestId: number; mac: Buffer; consumed: number };

/** An error in a connection's first bytes; `kind` is set once the preamble said which kind it is. */
export type StartError = ProtocolError<StartCode> & { kind?: ConnectionKind; version?: number };

/**
 * The first bytes a client sends on a connection: the preamble, and for a data or mux connection
 * the hello that follows it (the same 56 bytes; a mux connection's MAC has its own label).
 *
 *   data hello  +------------+------------+---------+
 *               | SESSION ID | REQUEST ID |   MAC   |
 *               |     16     |  8 (u64)   |   32    |
 *               +------------+------------+---------+
 *   MAC = HMAC-SHA256(session key, "splicer-tunnel/1 data" 00 SESSION-ID REQUEST-ID)
 */
export function parseConnectionStart(buf: Buffer): Incomplete | ConnectionStart | StartError {
  // The magic is judged byte by byte, so a stranger (an HTTP request, a TLS ClientHello) is told at once.
  for (let i = 0; i < MAGIC.length && i < buf.length; i++) {
    if (buf[i] !== MAGIC[i]) return protocolError('bad-magic', DATA_ERROR.BAD_HEADER, 'not a splicer tunnel connection (bad magic)');
  }
  if (buf.length < PREAMBLE_LENGTH) return INCOMPLETE;
  const version = buf[4];
  const kindByte = buf[5];
  const kind: ConnectionKind | undefined = KIND_OF[kindByte];
  if (!kind) return protocolError('bad-kind', DATA_ERROR.BAD_HEADER, `unknown connection kind 0x${kindByte.toString(16).padStart(2, '0')}`);
  if (!SUPPORTED_VERSIONS.includes(version)) {
    return {
      ...protocolError('unsupported-version', DATA_ERROR.UNSUPPORTED_VERSION, `protocol version ${version} is not supported (supported: ${SUPPORTED_VERSIONS.join(', ')})`),
      kind,
      version,
    };
  }
  if (buf[6] !== 0 || buf[7] !== 0) return { ...protocolError('bad-preamble', DATA_ERROR.BAD_HEADER, 'reserved preamble bytes must be zero'), kind, version };
  if (kind === 'control') return { status: 'ok', kind, version, consumed: PREAMBLE_LENGTH };
  const r = new Reader(buf, PREAMBLE_LENGTH);
  const sessionId = r.bytes(SESSION_ID_LENGTH);
  const high = r.bytes(8);
  const mac = r.bytes(MAC_LENGTH);
  if (!sessionId || !high || !mac) return INCOMPLETE;
  const requestId = Number(high.readBigUInt64BE(0));
  if (requestId < 1 || !Number.isSafeInteger(requestId)) {
    return { ...protocolError('bad-request-id', DATA_ERROR.BAD_HEADER, 'request id out of range'), kind, version };
  }
  return { status: 'ok', kind, version, sessionId: Buffer.from(sessionId), requestId, mac: Buffer.from(mac), consumed: r.pos };
}

export function encodeDataHello(sessionId: Buffer, requestId: number, mac: Buffer, kind: 'data' | 'mux' = 'data'): Buffer {
  if (sessionId.length !== SESSION_ID_LENGTH || mac.length !== MAC_LENGTH) throw new RangeError('bad session id or mac length');
  if (!Number.isSafeInteger(requestId) || requestId < 1) throw new RangeError(`request id out of range: ${requestId}`);
  const out = Buffer.alloc(PREAMBLE_LENGTH + DATA_HELLO_LENGTH);
  encodePreamble(kind).copy(out, 0);
  sessionId.copy(out, PREAMBLE_LENGTH);
  out.writeBigUInt64BE(BigInt(requestId), PREAMBLE_LENGTH + SESSION_ID_LENGTH);
  mac.copy(out, PREAMBLE_LENGTH + SESSION_ID_LENGTH + 8);
  return out;
}

// ---------------------------------------------------------------------------------------------
// The server's reply on a data connection: START (then raw bytes both ways) or ERROR (then close).
//
//   START  +------+-----------+---------+------+--------+--------+------+
//          | 0x01 | STREAM ID | NAMELEN | NAME | FAMILY |  ADDR  | PORT |
//          |  1   |  8 (u64)  |    1    | 1-64 |   1    | 0/4/16 |  2   |
//          +------+-----------+---------+------+--------+--------+------+
//          FAMILY 4 or 6: the public client's address; 0: unknown (no ADDR, PORT 0)
//   ERROR  +------+------+--------+---------+
//          | 0x02 | CODE | MSGLEN | MESSAGE |
//          |  1   |  1   |   1    |  UTF-8  |
//          +------+------+--------+---------+

export const REPLY = { START: 0x01, ERROR: 0x02, MUX: 0x03 } as const;
export const MAX_TUNNEL_NAME = 64;
/** Tunnel names: a letter or digit first, then letters, digits, '_', '.', '-'. */
export const TUNNEL_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;

export interface PublicAddress {
  host: string;
  port: number;
}

export type DataReply =
  | { status: 'ok'; type: 'start'; streamId: number; tunnel: string; client: PublicAddress | null; consumed: number }
  | { status: 'ok'; type: 'error'; code: number; name: string; message: string; consumed: number };

export type ReplyCode = 'bad-reply' | 'bad-name' | 'bad-family' | 'bad-stream-id';

export function parseDataReply(buf: Buffer): Incomplete | DataReply | ProtocolError<ReplyCode> {
  const r = new Reader(buf);
  const type = r.u8();
  if (type === undefined) return INCOMPLETE;
  if (type === REPLY.ERROR) {
    const code = r.u8();
    const length = r.u8();
    if (code === undefined || length === undefined) return INCOMPLETE;
    const text = r.bytes(length);
    if (!text) return INCOMPLETE;
    return { status: 'ok', type: 'error', code, name: dataErrorName(code), message: text.toString('utf8'), consumed: r.pos };
  }
  if (type !== REPLY.START) return protocolError('bad-reply', 0, `unknown data reply type 0x${type.toString(16).padStart(2, '0')}`);
  const idBytes = r.bytes(8);
  if (!idBytes) return INCOMPLETE;
  const streamId = Number(idBytes.readBigUInt64BE(0));
  if (streamId < 1 || !Number.isSafeInteger(streamId)) return protocolError('bad-stream-id', 0, 'stream id out of range');
  const nameLength = r.u8();
  if (nameLength === undefined) return INCOMPLETE;
  if (nameLength < 1 || nameLength > MAX_TUNNEL_NAME) return protocolError('bad-name', 0, `tunnel name length ${nameLength} is out of range (1-${MAX_TUNNEL_NAME})`);
  const nameBytes = r.bytes(nameLength);
  if (!nameBytes) return INCOMPLETE;
  const tunnel = nameBytes.toString('latin1');
  if (!TUNNEL_NAME.test(tunnel)) return protocolError('bad-name', 0, 'tunnel name has characters outside [A-Za-z0-9_.-]');
  const family = r.u8();
  if (family === undefined) return INCOMPLETE;
  if (family !== 0 && family !== 4 && family !== 6) return protocolError('bad-family', 0, `unknown address family ${family}`);
  const address = r.bytes(family === 0 ? 0 : family === 4 ? 4 : 16);
  const port = r.u16();
  if (!address || port === undefined) return INCOMPLETE;
  const client = family === 0 ? null : { host: family === 4 ? ipv4ToString(address) : ipv6ToString(address), port };
  return { status: 'ok', type: 'start', streamId, tunnel, client, consumed: r.pos };
}

/**
 * The server's reply on a mux connection: MUX (one byte 0x03, then the connection is a yamux
 * session) or the same ERROR as on a data connection. A START here is `bad-reply`.
 */
export function parseMuxReply(buf: Buffer): Incomplete | { status: 'ok'; type: 'mux'; consumed: number } | Extract<DataReply, { type: 'error' }> | ProtocolError<ReplyCode> {
  if (buf.length === 0) return INCOMPLETE;
  if (buf[0] === REPLY.MUX) return { status: 'ok', type: 'mux', consumed: 1 };
  if (buf[0] !== REPLY.ERROR) return protocolError('bad-reply', 0, `unknown mux reply type 0x${buf[0].toString(16).padStart(2, '0')}`);
  return parseDataReply(buf) as Incomplete | Extract<DataReply, { type: 'error' }>;
}

export const MUX_ACCEPTED: Buffer = Buffer.from([REPLY.MUX]);

export function encodeStart(streamId: number, tunnel: string, client: PublicAddress | null): Buffer {
  if (!TUNNEL_NAME.test(tunnel)) throw new RangeError(`bad tunnel name ${JSON.stringify(tunnel)}`);
  const host = client ? unmapIPv4(client.host) : undefined;
  const address = host === undefined ? undefined : (ipv4ToBytes(host) ?? ipv6ToBytes(host));
  const family = address ? (address.length === 4 ? 4 : 6) : 0;
  const name = Buffer.from(tunnel, 'latin1');
  const out = Buffer.alloc(1 + 8 + 1 + name.length + 1 + (address?.length ?? 0) + 2);
  let pos = out.writeUInt8(REPLY.START, 0);
  pos = out.writeBigUInt64BE(BigInt(streamId), pos);
  pos = out.writeUInt8(name.length, pos);
  pos += name.copy(out, pos);
  pos = out.writeUInt8(family, pos);
  if (address) pos += address.copy(out, pos);
  out.writeUInt16BE(address ? client!.port : 0, pos);
  return out;
}

export function encodeDataError(code: number, message: string): Buffer {
  let text = Buffer.from(message, 'utf8');
  if (text.length > 255) {
    // Cut at a character boundary: never in the middle of a UTF-8 sequence.
    let end = 255;
    while (end > 0 && (text[end] & 0xc0) === 0x80) end--;
    text = text.subarray(0, end);
  }
  return Buffer.concat([Buffer.from([REPLY.ERROR, code, text.length]), text]);
}

/** A host as the START header carries it: IPv4-mapped IPv6 unmapped; anything else not an IP is unknown. */
export function publicAddressOf(host: string | undefined, port: number | undefined): PublicAddress | null {
  if (!host || port === undefined) return null;
  const unmapped = unmapIPv4(host);
  return net.isIP(unmapped) ? { host: unmapped, port } : null;
}
