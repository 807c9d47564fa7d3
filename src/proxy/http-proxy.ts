// HTTP proxying on top of Node's own HTTP parser: CONNECT tunnels go to
// connectAndForward (spliced like SOCKS), plain absolute-URI requests are sent
// on with http.request, keep-alive to the client kept, hop-by-hop headers dropped.
import http from 'node:http';
import type net from 'node:net';
import type { Duplex } from 'node:stream';
import { formatHostPort } from '../net/host-port.js';
import { encodeHttpResponse, httpStatusForErrno, parseAbsoluteUri, parseBasicAuth, parseConnectTarget, stripHopByHop, type ConnectHead, type HttpHeaders } from '../protocol/http.js';
import type { Credentials } from './auth.js';
import { DialError } from '../net/connect.js';
import { dial } from '../net/dial.js';
import { ClientSession, type HandshakeSession } from './session.js';
import { allowed, connectAndForward, refusedBeforeLookup, type Handover, type Replies, type TunnelContext } from './connect-step.js';
import type { ProxyConnectionRecord } from './options.js';

export interface HttpProxyContext extends TunnelContext {
  credentials?: Credentials;
  allowEmptyCredentials: boolean;
  handshakeTimeout: number;
}

const REALM = 'Basic realm="splicer", charset="UTF-8"';
const REASONS: Record<number, string> = { 400: 'Bad Request', 403: 'Forbidden', 407: 'Proxy Authentication Required', 502: 'Bad Gateway', 504: 'Gateway Timeout' };

function errorResponse(status: number, close = true): Buffer {
  const headers: HttpHeaders = [['Content-Type', 'text/plain; charset=utf-8']];
  if (status === 407) headers.push(['Proxy-Authenticate', REALM]);
  if (close) headers.push(['Connection', 'close']);
  return encodeHttpResponse(status, REASONS[status] ?? 'Error', headers, `${status} ${REASONS[status] ?? 'Error'}\n`);
}

const connectReplies: Replies = {
  success: () => ({ reply: Buffer.from('HTTP/1.1 200 Connection Established\r\n\r\n', 'latin1'), code: 200 }),
  failure: (code) => {
    const status = httpStatusForErrno(code);
    return { reply: errorResponse(status), code: status };
  },
};

function pairsOf(raw: string[]): HttpHeaders {
  const out: HttpHeaders = [];
  for (let i = 0; i + 1 < raw.length; i += 2) out.push([raw[i], raw[i + 1]]);
  return out;
}

// Node decodes and re-frames bodies on both sides, so the framing headers of one hop are not the other's.
const REFRAMED = new Set(['transfer-encoding', 'content-length']);
function forwardedHeaders(raw: string[], keepLength: boolean): HttpHeaders {
  return stripHopByHop(pairsOf(raw)).filter(([name]) => {
    const lower = name.toLowerCase();
    return !REFRAMED.has(lower) || (keepLength && lower === 'content-length');
  });
}

interface ConnectionState {
  record: ProxyConnectionRecord;
  tunnel: Promise<void> | undefined;
  /** Until the first request head is in: the handshake timeout. */
  headTimer: NodeJS.Timeout | undefined;
  /** Who the rules see: the client a PROXY header named, else the socket's peer. */
  client: { readonly remoteAddress?: string };
  claimedClient: string | undefined;
}

export class HttpProxy {
  readonly #server: http.Server;
  readonly #ctx: HttpProxyContext;
  readonly #states = new WeakMap<Duplex, ConnectionState>();

  constructor(ctx: HttpProxyContext) {
    this.#ctx = ctx;
    this.#server = http.createServer({ maxHeaderSize: 16 * 1024, requestTimeout: 0 });
    this.#server.headersTimeout = ctx.handshakeTimeout;
    this.#server.on('connect', (req: http.IncomingMessage, socket: Duplex, head: Buffer) => this.#onConnect(req, socket, head));
    this.#server.on('request', (req, res) => void this.#onRequest(req, res));
    this.#server.on('clientError', (err: NodeJS.ErrnoException, socket: net.Socket) => {
      const state = this.#states.get(socket);
      const status = err.code === 'HPE_HEADER_OVERFLOW' ? 431 : 400;
      if (state && state.record.outcome === 'open') {
        state.record.outcome = err.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? 'handshake-timeout' : 'bad-request';
        state.record.reply = status;
      }
      if (socket.writable && !socket.destroyed) {
        socket.end(status === 431 ? encodeHttpResponse(431, 'Request Header Fields Too Large', [['Connection', 'close']]) : errorResponse(400));
      }
      socket.destroy();
    });
  }

  /**
   * Serves one client connection whose first bytes (already read) are `first`; resolves when it
   * is over. `claimedClient`: the client for the rules when it is not the socket's peer (a PROXY
   * header's; a mux stream's connection).
   */
  serve(socket: Duplex, first: Buffer, record: ProxyConnectionRecord, claimedClient?: string): Promise<void> {
    record.protocol = 'http';
    record.outcome = 'open';
    return new Promise<void>((resolve) => {
      const client = claimedClient === undefined ? (socket as { remoteAddress?: string }) : { remoteAddress: claimedClient };
      const state: ConnectionState = { record, tunnel: undefined, headTimer: undefined, client, claimedClient };
      this.#states.set(socket, state);
      // Node enforces headersTimeout only on a server that listen()s; this one is handed sockets,
      // so a client that never finishes its request head is timed out here.
      state.headTimer = setTimeout(() => {
        if (record.outcome === 'open') record.outcome = 'handshake-timeout';
        socket.destroy();
      }, this.#ctx.handshakeTimeout);
      socket.once('close', () => {
        clearTimeout(state.headTimer);
        if (state.tunnel) state.tunnel.then(resolve);
        else {
          if (record.outcome === 'open') record.outcome = record.reply === undefined ? 'client-closed' : 'eof';
          resolve();
        }
      });
      socket.unshift(first);
      this.#server.emit('connection', socket);
      // The bytes put back are in the stream's buffer, not the handle's: they reach the parser as 'data'.
      socket.resume();
    });
  }

  /**
   * A CONNECT whose head was read without Node's parser (the native accept path, parseConnectHead):
   * the same checks and replies as #onConnect, and the same connect step.
   */
  serveConnect(session: HandshakeSession, head: ConnectHead, record: ProxyConnectionRecord): Promise<Handover | void> | void {
    record.protocol = 'http';
    record.command = 'connect';
    const auth = this.#authorized(head.proxyAuthorization);
    record.user = auth.user;
    if (!auth.ok) {
      record.outcome = 'auth-failed';
      record.reply = 407;
      return session.close(errorResponse(407));
    }
    const target = parseConnectTarget(head.target);
    if (target.status !== 'ok') {
      record.outcome = 'bad-request';
      record.reply = 400;
      return session.close(errorResponse(400));
    }
    return connectAndForward(session, { host: target.host, port: target.port, command: 'connect', user: auth.user }, connectReplies, this.#ctx, record);
  }

  #authorized(header: string | undefined): { ok: boolean; user?: string } {
    const credentials = this.#ctx.credentials;
    if (!credentials?.required) return { ok: true };
    const parsed = header ? parseBasicAuth(header) : null;
    if (!parsed) return { ok: false };
    if ((parsed.user === '' || parsed.pass === '') && !this.#ctx.allowEmptyCredentials) return { ok: false, user: parsed.user };
    return { ok: credentials.verify(parsed.user, parsed.pass), user: parsed.user };
  }

  #onConnect(req: http.IncomingMessage, socket: Duplex, head: Buffer): void {
    const state = this.#states.get(socket);
    if (!state) return void socket.destroy();
    clearTimeout(state.headTimer);
    const { record } = state;
    record.command = 'connect';
    const session = new ClientSession(socket, this.#ctx.handshakeTimeout, head);
    if (state.claimedClient !== undefined) session.claimClient(state.claimedClient);
    const auth = this.#authorized(req.headers['proxy-authorization']);
    record.user = auth.user;
    const run = async () => {
      if (!auth.ok) {
        record.outcome = 'auth-failed';
        record.reply = 407;
        return session.close(errorResponse(407));
      }
      const target = parseConnectTarget(req.url ?? '');
      if (target.status !== 'ok') {
        record.outcome = 'bad-request';
        record.reply = 400;
        return session.close(errorResponse(400));
      }
      const handed = await connectAndForward(session, { host: target.host, port: target.port, command: 'connect', user: auth.user }, connectReplies, this.#ctx, record);
      await handed?.forwarding;
    };
    state.tunnel = run().catch(() => {
      record.outcome = 'client-closed';
      session.close();
    });
  }

  async #onRequest(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const socket = req.socket;
    const state = this.#states.get(socket);
    if (!state) return void res.destroy();
    clearTimeout(state.headTimer);
    const { record } = state;
    record.command = 'connect';
    const fail = (status: number, outcome: string) => {
      record.outcome = outcome;
      record.reply = status;
      if (!res.headersSent) {
        res.writeHead(status, { 'Content-Type': 'text/plain; charset=utf-8', ...(status === 407 ? { 'Proxy-Authenticate': REALM } : {}) });
        res.end(`${status} ${REASONS[status] ?? 'Error'}\n`);
      } else res.destroy();
    };
    const auth = this.#authorized(req.headers['proxy-authorization']);
    record.user = auth.user;
    if (!auth.ok) return fail(407, 'auth-failed');
    const target = parseAbsoluteUri(req.url ?? '');
    if (target.status !== 'ok') return fail(400, 'bad-request');
    const dest = { host: target.host, port: target.port, command: 'connect' as const, user: auth.user };
    record.destination = formatHostPort(dest);
    if (refusedBeforeLookup(this.#ctx, state.client, dest)) return fail(403, 'denied');

    let upstream: net.Socket;
    try {
      upstream = await dial(dest.host, dest.port, {
        timeout: this.#ctx.connectTimeout,
        lookup: this.#ctx.lookup,
        signal: this.#ctx.signal,
        allowAddress: (address) => allowed(this.#ctx, state.client, dest, address),
      });
    } catch (err) {
      const code = err instanceof DialError ? err.code : 'EIO';
      return fail(httpStatusForErrno(code), code === 'EACCES' ? 'denied' : code);
    }
    // One upstream connection per request: the origin closes it after the response.
    const headers: HttpHeaders = [...forwardedHeaders(req.rawHeaders, true), ['Connection', 'close']];
    record.engine = 'js';
    const upstreamReq = http.request({
      createConnection: () => upstream,
      method: req.method,
      path: target.path,
      headers: headers.flat(),
      setHost: false,
    });
    upstreamReq.on('error', (err: NodeJS.ErrnoException) => {
      upstream.destroy();
      fail(httpStatusForErrno(err.code ?? 'EIO'), err.code ?? 'EIO');
    });
    upstreamReq.on('response', (upstreamRes) => {
      record.reply = upstreamRes.statusCode;
      res.writeHead(upstreamRes.statusCode ?? 502, upstreamRes.statusMessage, forwardedHeaders(upstreamRes.rawHeaders, true).flat());
      upstreamRes.on('data', (chunk: Buffer) => (record.bytesDown += chunk.length));
      upstreamRes.pipe(res);
      upstreamRes.on('error', () => res.destroy());
    });
    req.on('data', (chunk: Buffer) => (record.bytesUp += chunk.length));
    req.pipe(upstreamReq);
  }
}
