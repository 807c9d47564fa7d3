// HTTP/1.x proxy requests (CONNECT and absolute-form forwarding): pure parsers of the target and
// the credentials, and the response encoder, no I/O. Node's own parser reads the request head.
// Grammar from RFC 9112 (message syntax) and RFC 9110 (semantics).
import net from 'node:net';
import { type ProtocolError, protocolError } from './reader.js';

export type HttpHeaders = Array<[name: string, value: string]>;

export type HttpErrorCode = 'ERR_BAD_TARGET' | 'ERR_UNSUPPORTED_SCHEME';

/** `reply` is the HTTP status to answer with before closing. */
export type HttpError = ProtocolError<HttpErrorCode>;

const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;

function parsePort(text: string): number | undefined {
  if (!/^\d{1,5}$/.test(text)) return undefined;
  const port = Number(text);
  return port >= 1 && port <= 65535 ? port : undefined;
}

const REG_NAME = /^[A-Za-z0-9\-._~!$&'()*+,;=%]+$/;

/** `host[:port]` or `[v6][:port]`; port undefined when absent, NaN when present but bad. */
function splitAuthority(authority: string): { host: string; port: number | undefined } | undefined {
  let host: string;
  let portText: string | undefined;
  const bracketed = /^\[([^\]]+)\](?::(.*))?$/.exec(authority);
  if (bracketed) {
    host = bracketed[1];
    portText = bracketed[2];
    if (!net.isIPv6(host)) return undefined;
  } else {
    const colon = authority.lastIndexOf(':');
    host = colon < 0 ? authority : authority.slice(0, colon);
    portText = colon < 0 ? undefined : authority.slice(colon + 1);
    // An unbracketed IPv6 literal cannot be told apart from host:port.
    if (!REG_NAME.test(host)) return undefined;
  }
  if (portText === undefined || portText === '') return { host, port: undefined };
  return { host, port: parsePort(portText) ?? NaN };
}

/** CONNECT's authority-form target (RFC 9112 3.2.3): the port is required. */
export function parseConnectTarget(target: string): { status: 'ok'; host: string; port: number } | HttpError {
  const parts = splitAuthority(target);
  if (!parts) return protocolError('ERR_BAD_TARGET', 400, 'CONNECT target is not host:port or [IPv6]:port');
  if (parts.port === undefined || Number.isNaN(parts.port)) return protocolError('ERR_BAD_TARGET', 400, 'CONNECT target needs a port in 1-65535');
  return { status: 'ok', host: parts.host, port: parts.port };
}

/** The most a request head may take, as the proxy's http.Server is configured (maxHeaderSize). */
export const MAX_HEAD_BYTES = 16 * 1024;

/** A plain CONNECT request head: its target and the one Proxy-Authorization header, if any. */
export interface ConnectHead {
  target: string;
  proxyAuthorization: string | undefined;
}

const CONNECT_PREFIX = Buffer.from('CONNECT ', 'latin1');
// RFC 9110 5.5: field values are VCHAR, SP and HTAB (obs-text is left to Node's parser).
const FIELD_VALUE = /^[\t\x20-\x7e]*$/;
// Request-target of a CONNECT: authority-form, visible ASCII without spaces.
const AUTHORITY = /^[\x21-\x7e]+$/;

/**
 * The head of a CONNECT request in its plainest form (RFC 9112): `CONNECT host:port HTTP/1.x`, CRLF
 * line ends, token names, no obs-fold, no body framing, at most one Proxy-Authorization. `consumed`
 * covers the head through its empty line; what follows is the tunnel's first bytes. `head: null`
 * (with `consumed: 0`) for any other request, or a CONNECT in any other form: those go to Node's
 * own HTTP parser, which answers malformed ones as it always does. Incomplete until the empty line
 * arrives, at most MAX_HEAD_BYTES.
 */
export function parseConnectHead(buf: Buffer): { status: 'incomplete' } | { status: 'ok'; consumed: number; head: ConnectHead | null } {
  const other = { status: 'ok' as const, consumed: 0, head: null };
  const prefix = Math.min(buf.length, CONNECT_PREFIX.length);
  if (buf.compare(CONNECT_PREFIX, 0, prefix, 0, prefix) !== 0) return other;
  const end = buf.indexOf('\r\n\r\n', 0, 'latin1');
  if (end < 0) return buf.length >= MAX_HEAD_BYTES ? other : { status: 'incomplete' };
  if (end + 4 > MAX_HEAD_BYTES) return other;
  const lines = buf.toString('latin1', 0, end).split('\r\n');
  const request = /^CONNECT ([^ ]+) HTTP\/1\.[01]$/.exec(lines[0]);
  if (!request || !AUTHORITY.test(request[1])) return other;
  let proxyAuthorization: string | undefined;
  for (let i = 1; i < lines.length; i++) {
    const line = lines[i];
    const colon = line.indexOf(':');
    if (colon <= 0 || line.includes('\n')) return other;
    const name = line.slice(0, colon);
    const value = line.slice(colon + 1).replace(/^[ \t]+|[ \t]+$/g, '');
    if (!TOKEN.test(name) || !FIELD_VALUE.test(value)) return other;
    const lower = name.toLowerCase();
    if (lower === 'content-length' || lower === 'transfer-encoding') return other;
    if (lower === 'proxy-authorization') {
      if (proxyAuthorization !== undefined) return other;
      proxyAuthorization = value;
    }
  }
  return { status: 'ok', consumed: end + 4, head: { target: request[1], proxyAuthorization } };
}

/**
 * An absolute-form target (RFC 9112 3.2.2) split for forwarding: `path` is the origin-form to send
 * upstream, byte for byte (no URL normalisation: the origin must see what the client sent).
 * Only http: is forwarded; https:// arrives through CONNECT instead.
 */
export function parseAbsoluteUri(target: string): { status: 'ok'; host: string; port: number; path: string } | HttpError {
  const m = /^([A-Za-z][A-Za-z0-9+.-]*):\/\/([^/?#]*)([^#]*)/.exec(target);
  if (!m) return protocolError('ERR_BAD_TARGET', 400, 'request target is not an absolute URI');
  if (m[1].toLowerCase() !== 'http') return protocolError('ERR_UNSUPPORTED_SCHEME', 400, `scheme ${m[1]}: is not forwarded`);
  // RFC 9110 4.2.4: userinfo in an http URI is to be treated as an error.
  if (m[2].includes('@')) return protocolError('ERR_BAD_TARGET', 400, 'userinfo in request target');
  const parts = splitAuthority(m[2]);
  if (!parts || Number.isNaN(parts.port)) return protocolError('ERR_BAD_TARGET', 400, 'bad host or port in request target');
  const path = m[3].startsWith('/') ? m[3] : `/${m[3]}`;
  return { status: 'ok', host: parts.host, port: parts.port ?? 80, path };
}

/**
 * `Basic <base64(user:pass)>` (RFC 7617), scheme case-insensitive, user split at the first ':'.
 * null for anything else, so callers answer 407 without telling why.
 */
export function parseBasicAuth(headerValue: string): { user: string; pass: string } | null {
  const m = /^[ \t]*basic[ \t]+([A-Za-z0-9+/]+={0,2})[ \t]*$/i.exec(headerValue);
  if (!m || m[1].length % 4 === 1) return null;
  const decoded = Buffer.from(m[1], 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  if (colon < 0) return null;
  return { user: decoded.slice(0, colon), pass: decoded.slice(colon + 1) };
}

const HOP_BY_HOP = new Set(['connection', 'proxy-connection', 'keep-alive', 'proxy-authorization', 'proxy-authenticate', 'te', 'trailer', 'upgrade']);
// Framing headers stay even when Connection names them: dropping them would desynchronise the
// body boundary between us and the origin (a known request-smuggling trick).
const FRAMING = new Set(['transfer-encoding', 'content-length']);

/** Headers to forward: hop-by-hop ones (RFC 9110 7.6.1) removed, and those listed in Connection. */
export function stripHopByHop(headers: HttpHeaders): HttpHeaders {
  const drop = new Set(HOP_BY_HOP);
  for (const [name, value] of headers) {
    if (name.toLowerCase() !== 'connection') continue;
    for (const token of value.split(',')) {
      const t = token.trim().toLowerCase();
      if (t && !FRAMING.has(t)) drop.add(t);
    }
  }
  return headers.filter(([name]) => !drop.has(name.toLowerCase()));
}

/**
 * `HTTP/1.1 status reason` + headers + CRLF + body. Content-Length is added for a body unless
 * given. Throws TypeError on CR, LF or NUL in any field: header injection is a caller bug.
 */
export function encodeHttpResponse(status: number, reason: string, headers: HttpHeaders | Record<string, string> = [], body?: Buffer | string): Buffer {
  if (!Number.isInteger(status) || status < 100 || status > 999) throw new RangeError(`status ${status} is not 100-999`);
  const list: HttpHeaders = Array.isArray(headers) ? [...headers] : Object.entries(headers);
  const payload = body === undefined ? undefined : Buffer.from(body);
  if (payload && !list.some(([n]) => n.toLowerCase() === 'content-length')) list.push(['Content-Length', String(payload.length)]);
  const unsafe = /[\r\n\0]/;
  if (unsafe.test(reason)) throw new TypeError('reason phrase contains CR, LF or NUL');
  let head = `HTTP/1.1 ${status} ${reason}\r\n`;
  for (const [name, value] of list) {
    if (!TOKEN.test(name) || unsafe.test(value)) throw new TypeError(`invalid header ${JSON.stringify(name)}`);
    head += `${name}: ${value}\r\n`;
  }
  head += '\r\n';
  const headBytes = Buffer.from(head, 'latin1');
  return payload ? Buffer.concat([headBytes, payload]) : headBytes;
}

/** Status for an upstream failure: 504 timeout, 403 refused by rules, else 502 (refused, reset, DNS). */
export function httpStatusForErrno(code: string): number {
  if (code === 'ETIMEDOUT') return 504;
  if (code === 'ERR_DENIED' || code === 'EACCES' || code === 'EPERM') return 403;
  return 502;
}
