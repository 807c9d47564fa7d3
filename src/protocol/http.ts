// HTTP/1.x proxy requests (CONNECT and absolute-form forwarding): pure parsers and encoders over
// Buffers, no I/O. Grammar from RFC 9112 (message syntax) and RFC 9110 (semantics).
import net from 'node:net';
import { INCOMPLETE, type Incomplete, type ProtocolError, protocolError } from './reader.js';

export interface HttpLimits {
  /** Request line + headers + the blank line, in bytes. */
  maxHeadBytes: number;
  maxHeaders: number;
}

export const DEFAULT_HTTP_LIMITS: HttpLimits = Object.freeze({ maxHeadBytes: 16384, maxHeaders: 100 });

export type HttpHeaders = Array<[name: string, value: string]>;

export interface ProxyRequestHead {
  method: string;
  /** As sent: authority-form for CONNECT, absolute-form for forwarding. */
  target: string;
  /** e.g. 'HTTP/1.1'; always major version 1. */
  version: string;
  /** Original case and order; values decoded as latin1 so bytes survive a round trip. */
  headers: HttpHeaders;
}

export type HttpErrorCode =
  | 'ERR_MALFORMED'
  | 'ERR_HEAD_TOO_LARGE'
  | 'ERR_TOO_MANY_HEADERS'
  | 'ERR_BAD_VERSION'
  | 'ERR_BAD_TARGET'
  | 'ERR_UNSUPPORTED_SCHEME';

/** `reply` is the HTTP status to answer with before closing. */
export type HttpError = ProtocolError<HttpErrorCode>;

const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
// RFC 9110 field-value: VCHAR, obs-text, SP, HTAB. Any other control byte, in any line, is refused.
const BAD_VALUE = /[\x00-\x08\x0a-\x1f\x7f]/;
const VISIBLE_ASCII = /^[\x21-\x7e]+$/;

const malformed = (message: string): HttpError => protocolError('ERR_MALFORMED', 400, message);

/*
 * Request head (RFC 9112 section 2.1):
 *   request-line   = method SP request-target SP HTTP-version CRLF
 *   *( field-name ":" OWS field-value OWS CRLF )
 *   CRLF
 * Bare LF is accepted as a line end (RFC 9112 2.2 allows it); a CR anywhere else is not, nor is
 * obs-fold, nor whitespace before the colon (both are request-smuggling vectors, RFC 9112 5.1/5.2).
 * Leading blank lines are skipped (RFC 9112 2.2). Complete lines are checked as they arrive, so a
 * bad request line is refused without waiting for the rest of the head. `consumed` ends after the
 * blank line: later bytes are the body or, after CONNECT, the tunnel's first payload.
 */
export function parseProxyRequestHead(buf: Buffer, options: Partial<HttpLimits> = {}): Incomplete | HttpError | { status: 'ok'; request: ProxyRequestHead; consumed: number } {
  const limits = { ...DEFAULT_HTTP_LIMITS, ...options };
  const window = buf.subarray(0, limits.maxHeadBytes);
  let request: Omit<ProxyRequestHead, 'headers'> | undefined;
  const headers: HttpHeaders = [];
  let pos = 0;
  for (;;) {
    const lf = window.indexOf(0x0a, pos);
    if (lf < 0) {
      // Refuse binary garbage now rather than after maxHeadBytes of it.
      const partial = window.subarray(pos).toString('latin1');
      if (BAD_VALUE.test(partial.replace(/\r$/, ''))) return malformed('control character in request head');
      if (buf.length >= limits.maxHeadBytes) return protocolError('ERR_HEAD_TOO_LARGE', 431, `request head exceeds ${limits.maxHeadBytes} bytes`);
      return INCOMPLETE;
    }
    const line = window.subarray(pos, lf > pos && window[lf - 1] === 0x0d ? lf - 1 : lf).toString('latin1');
    pos = lf + 1;
    if (BAD_VALUE.test(line)) return malformed('control character in request head');
    if (request === undefined) {
      if (line === '') continue;
      const parsed = parseRequestLine(line);
      if (parsed.status === 'error') return parsed;
      request = parsed.value;
    } else if (line === '') {
      return { status: 'ok', request: { ...request, headers }, consumed: pos };
    } else {
      if (line[0] === ' ' || line[0] === '\t') return malformed('obsolete line folding');
      const colon = line.indexOf(':');
      const name = line.slice(0, colon);
      if (colon < 0 || !TOKEN.test(name)) return malformed('malformed header line');
      const value = line.slice(colon + 1).replace(/^[ \t]+|[ \t]+$/g, '');
      headers.push([name, value]);
      if (headers.length > limits.maxHeaders) return protocolError('ERR_TOO_MANY_HEADERS', 431, `more than ${limits.maxHeaders} headers`);
    }
  }
}

function parseRequestLine(line: string): { status: 'ok'; value: Omit<ProxyRequestHead, 'headers'> } | HttpError {
  const parts = line.split(' ');
  if (parts.length !== 3) return malformed('request line is not METHOD SP TARGET SP VERSION');
  const [method, target, version] = parts;
  if (!TOKEN.test(method)) return malformed('bad method');
  if (!VISIBLE_ASCII.test(target)) return malformed('bad request target');
  const v = /^HTTP\/(\d)\.(\d)$/.exec(version);
  if (!v) return malformed('bad HTTP version');
  if (v[1] !== '1') return protocolError('ERR_BAD_VERSION', 505, `${version} not supported`);
  return { status: 'ok', value: { method, target, version } };
}

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
