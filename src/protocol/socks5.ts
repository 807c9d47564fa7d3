// SOCKS5 (RFC 1928) and username/password auth (RFC 1929): pure parsers and encoders, no I/O.
// Every parser takes all bytes received so far and returns incomplete, ok with the bytes consumed
// (the rest is the next message or optimistic payload), or an error carrying the code to reply with.
import { type AddressType, encodeSocks5Address, encodeSocks5AddressAfter, readSocks5Address } from './address.js';
import { INCOMPLETE, type Incomplete, type ProtocolError, protocolError, Reader } from './reader.js';

export const SOCKS5_VERSION = 0x05;
export const USERPASS_VERSION = 0x01;

export const AUTH_METHOD = { NO_AUTH: 0x00, GSSAPI: 0x01, USERNAME_PASSWORD: 0x02, NO_ACCEPTABLE: 0xff } as const;

export const AUTH_STATUS = { SUCCESS: 0x00, FAILURE: 0x01 } as const;

export const SOCKS5_COMMAND = { CONNECT: 0x01, BIND: 0x02, UDP_ASSOCIATE: 0x03 } as const;

export const SOCKS5_REPLY = {
  SUCCEEDED: 0x00,
  GENERAL_FAILURE: 0x01,
  NOT_ALLOWED: 0x02,
  NETWORK_UNREACHABLE: 0x03,
  HOST_UNREACHABLE: 0x04,
  CONNECTION_REFUSED: 0x05,
  TTL_EXPIRED: 0x06,
  COMMAND_NOT_SUPPORTED: 0x07,
  ADDRESS_TYPE_NOT_SUPPORTED: 0x08,
} as const;

export type Socks5Command = 'connect' | 'bind' | 'udp-associate';
const COMMANDS: Record<number, Socks5Command> = { 1: 'connect', 2: 'bind', 3: 'udp-associate' };
const COMMAND_BYTES: Record<Socks5Command, number> = { connect: 1, bind: 2, 'udp-associate': 3 };

export interface Socks5Request {
  command: Socks5Command;
  host: string;
  port: number;
  addressType: AddressType;
}

export interface Socks5Reply {
  rep: number;
  host: string;
  port: number;
  addressType: AddressType;
}

export interface Credentials {
  /** UTF-8 decoded, for logs and lookups; may be '' (ULEN 0): the server decides whether to allow it. */
  username: string;
  password: string;
  /** Exact bytes (copies), for constant-time comparison with crypto.timingSafeEqual. */
  rawUsername: Buffer;
  rawPassword: Buffer;
}

export type Socks5ErrorCode =
  | 'ERR_BAD_VERSION'
  | 'ERR_NO_METHODS'
  | 'ERR_BAD_AUTH_VERSION'
  | 'ERR_BAD_COMMAND'
  | 'ERR_BAD_ATYP'
  | 'ERR_EMPTY_DOMAIN'
  | 'ERR_BAD_DOMAIN';

type Result<K extends string, T> = Incomplete | ({ status: 'ok'; consumed: number } & Record<K, T>) | ProtocolError<Socks5ErrorCode>;

function hex(byte: number): string {
  return `0x${byte.toString(16).padStart(2, '0')}`;
}

/*
 * Greeting (RFC 1928 section 3):
 *   +----+----------+----------+
 *   |VER | NMETHODS | METHODS  |
 *   +----+----------+----------+
 *   | 1  |    1     | 1 to 255 |
 *   +----+----------+----------+
 * Errors carry reply 0xFF (no acceptable methods), sent as `05 FF` before closing.
 */
export function parseSocks5Greeting(buf: Buffer): Result<'methods', number[]> {
  const r = new Reader(buf);
  const version = r.u8();
  if (version === undefined) return INCOMPLETE;
  if (version !== SOCKS5_VERSION) return protocolError('ERR_BAD_VERSION', AUTH_METHOD.NO_ACCEPTABLE, `version ${version} is not SOCKS5`);
  const count = r.u8();
  if (count === undefined) return INCOMPLETE;
  if (count === 0) return protocolError('ERR_NO_METHODS', AUTH_METHOD.NO_ACCEPTABLE, 'NMETHODS is 0');
  const methods = r.bytes(count);
  if (methods === undefined) return INCOMPLETE;
  return { status: 'ok', methods: [...methods], consumed: r.pos };
}

/*
 * Username/password request (RFC 1929 section 2); VER is 0x01, the sub-negotiation's own version:
 *   +----+------+----------+------+----------+
 *   |VER | ULEN |  UNAME   | PLEN |  PASSWD  |
 *   +----+------+----------+------+----------+
 *   | 1  |  1   | 1 to 255 |  1   | 1 to 255 |
 *   +----+------+----------+------+----------+
 * ULEN/PLEN 0 are accepted here: some clients send them, and policy belongs to the server.
 * Errors carry status 0x01 (failure). Messages never include the credentials.
 */
export function parseSocks5Auth(buf: Buffer): Result<'credentials', Credentials> {
  const r = new Reader(buf);
  const version = r.u8();
  if (version === undefined) return INCOMPLETE;
  if (version !== USERPASS_VERSION) {
    return protocolError('ERR_BAD_AUTH_VERSION', AUTH_STATUS.FAILURE, `username/password version ${version} is not 1`);
  }
  const ulen = r.u8();
  if (ulen === undefined) return INCOMPLETE;
  const user = r.bytes(ulen);
  if (user === undefined) return INCOMPLETE;
  const plen = r.u8();
  if (plen === undefined) return INCOMPLETE;
  const pass = r.bytes(plen);
  if (pass === undefined) return INCOMPLETE;
  const rawUsername = Buffer.from(user);
  const rawPassword = Buffer.from(pass);
  return {
    status: 'ok',
    credentials: { username: rawUsername.toString('utf8'), password: rawPassword.toString('utf8'), rawUsername, rawPassword },
    consumed: r.pos,
  };
}

/*
 * Request (RFC 1928 section 4) and reply (section 6) share one layout; byte 2 is CMD or REP:
 *   +----+-----+-------+------+----------+----------+
 *   |VER | CMD |  RSV  | ATYP | DST.ADDR | DST.PORT |
 *   +----+-----+-------+------+----------+----------+
 *   | 1  |  1  | X'00' |  1   | Variable |    2     |
 *   +----+-----+-------+------+----------+----------+
 * RSV is ignored rather than checked: rejecting a non-zero reserved byte buys nothing.
 * Errors come as soon as the bytes seen prove the request bad (unknown CMD -> 07, unknown ATYP -> 08);
 * the server should end() and drain after the reply, since closing with unread input sends an RST.
 */
export function parseSocks5Request(buf: Buffer): Result<'request', Socks5Request> {
  const r = new Reader(buf);
  const version = r.u8();
  if (version === undefined) return INCOMPLETE;
  if (version !== SOCKS5_VERSION) return protocolError('ERR_BAD_VERSION', SOCKS5_REPLY.GENERAL_FAILURE, `version ${version} is not SOCKS5`);
  const cmd = r.u8();
  if (cmd === undefined) return INCOMPLETE;
  const command = COMMANDS[cmd];
  if (command === undefined) return protocolError('ERR_BAD_COMMAND', SOCKS5_REPLY.COMMAND_NOT_SUPPORTED, `command ${hex(cmd)} not supported`);
  if (r.u8() === undefined) return INCOMPLETE;
  const address = readSocks5Address(r);
  if ('status' in address) return address;
  return { status: 'ok', request: { command, ...address }, consumed: r.pos };
}

/** The client side of the same layout, for chaining through an upstream SOCKS5 proxy. */
export function parseSocks5Reply(buf: Buffer): Result<'reply', Socks5Reply> {
  const r = new Reader(buf);
  const version = r.u8();
  if (version === undefined) return INCOMPLETE;
  if (version !== SOCKS5_VERSION) return protocolError('ERR_BAD_VERSION', SOCKS5_REPLY.GENERAL_FAILURE, `version ${version} is not SOCKS5`);
  const rep = r.u8();
  if (rep === undefined || r.u8() === undefined) return INCOMPLETE;
  const address = readSocks5Address(r);
  if ('status' in address) return address;
  return { status: 'ok', reply: { rep, ...address }, consumed: r.pos };
}

export function encodeSocks5Greeting(methods: readonly number[]): Buffer {
  if (methods.length < 1 || methods.length > 255) throw new RangeError(`${methods.length} methods; SOCKS5 allows 1-255`);
  return Buffer.from([SOCKS5_VERSION, methods.length, ...methods]);
}

/** `05 METHOD`; after `05 FF` the server closes. */
export function encodeMethodSelection(method: number): Buffer {
  return Buffer.of(SOCKS5_VERSION, method);
}

export function encodeSocks5Auth(username: string | Buffer, password: string | Buffer): Buffer {
  const user = Buffer.from(username);
  const pass = Buffer.from(password);
  if (user.length > 255 || pass.length > 255) throw new RangeError('username and password are limited to 255 bytes each');
  return Buffer.concat([Buffer.of(USERPASS_VERSION, user.length), user, Buffer.of(pass.length), pass]);
}

/** `01 STATUS` (RFC 1929): 00 success; anything else is failure and the server closes. */
export function encodeAuthStatus(ok: boolean): Buffer {
  return Buffer.of(USERPASS_VERSION, ok ? AUTH_STATUS.SUCCESS : AUTH_STATUS.FAILURE);
}

export function encodeSocks5Request(command: Socks5Command, host: string, port: number): Buffer {
  return encodeSocks5AddressAfter([SOCKS5_VERSION, COMMAND_BYTES[command], 0x00], host, port);
}

/**
 * `05 REP 00 ATYP BND.ADDR BND.PORT`, always full length, failures included: some clients choke on
 * the 2-byte replies a few servers send. A missing or '' host encodes as 0.0.0.0 (ATYP 01).
 */
export function encodeSocks5Reply(rep: number, bind: { host?: string; port?: number } = {}): Buffer {
  return encodeSocks5AddressAfter([SOCKS5_VERSION, rep, 0x00], bind.host, bind.port ?? 0);
}

/** Parse failures of a UDP datagram carry no reply: the datagram is dropped silently. */
export interface UdpDatagramError {
  status: 'error';
  code: 'ERR_SHORT_DATAGRAM' | 'ERR_BAD_ATYP' | 'ERR_EMPTY_DOMAIN' | 'ERR_BAD_DOMAIN';
  message: string;
}

export interface UdpDatagram {
  /** Non-zero means a fragment; RFC 1928 lets a server without reassembly drop those. */
  frag: number;
  host: string;
  port: number;
  addressType: AddressType;
  /** A view into the input buffer, not a copy. */
  data: Buffer;
}

/*
 * UDP request header (RFC 1928 section 7), in front of every relayed datagram, both directions:
 *   +----+------+------+----------+----------+----------+
 *   |RSV | FRAG | ATYP | DST.ADDR | DST.PORT |   DATA   |
 *   +----+------+------+----------+----------+----------+
 *   | 2  |  1   |  1   | Variable |    2     | Variable |
 *   +----+------+------+----------+----------+----------+
 * A datagram arrives whole, so a short one is an error, not "incomplete".
 */
export function parseUdpDatagram(buf: Buffer): { status: 'ok'; datagram: UdpDatagram } | UdpDatagramError {
  const r = new Reader(buf);
  const short: UdpDatagramError = { status: 'error', code: 'ERR_SHORT_DATAGRAM', message: `datagram of ${buf.length} bytes is shorter than its header` };
  if (r.u16() === undefined) return short;
  const frag = r.u8();
  if (frag === undefined) return short;
  const address = readSocks5Address(r);
  if ('status' in address) {
    if (address.status === 'incomplete') return short;
    return { status: 'error', code: address.code, message: address.message };
  }
  return { status: 'ok', datagram: { frag, ...address, data: buf.subarray(r.pos) } };
}

export function encodeUdpDatagram(host: string, port: number, data: Buffer, frag = 0): Buffer {
  return Buffer.concat([Buffer.of(0x00, 0x00, frag), encodeSocks5Address(host, port), data]);
}

// errno names from connect()/getaddrinfo, mapped to the closest RFC 1928 reply.
const ERRNO_REPLY: Record<string, number> = {
  ECONNREFUSED: SOCKS5_REPLY.CONNECTION_REFUSED,
  ENETUNREACH: SOCKS5_REPLY.NETWORK_UNREACHABLE,
  ENETDOWN: SOCKS5_REPLY.NETWORK_UNREACHABLE,
  EHOSTUNREACH: SOCKS5_REPLY.HOST_UNREACHABLE,
  EHOSTDOWN: SOCKS5_REPLY.HOST_UNREACHABLE,
  ENOTFOUND: SOCKS5_REPLY.HOST_UNREACHABLE, // DNS failure counts as host unreachable
  EAI_AGAIN: SOCKS5_REPLY.HOST_UNREACHABLE,
  ENODATA: SOCKS5_REPLY.HOST_UNREACHABLE,
  ETIMEDOUT: SOCKS5_REPLY.TTL_EXPIRED, // the customary REP for a connect timeout
  EAFNOSUPPORT: SOCKS5_REPLY.ADDRESS_TYPE_NOT_SUPPORTED,
  EACCES: SOCKS5_REPLY.NOT_ALLOWED,
  EPERM: SOCKS5_REPLY.NOT_ALLOWED, // connect() fails with EPERM when a local firewall rule blocks it
  ERR_DENIED: SOCKS5_REPLY.NOT_ALLOWED, // the server's own code for a rule refusing the target
};

/** The REP for an outcome: no code means success, an unknown code general failure (01). */
export function socks5ReplyForErrno(code: string | null | undefined): number {
  if (!code) return SOCKS5_REPLY.SUCCEEDED;
  return Object.hasOwn(ERRNO_REPLY, code) ? ERRNO_REPLY[code] : SOCKS5_REPLY.GENERAL_FAILURE;
}
