// Toxiproxy's HTTP API over a RelayRegistry: the same routes, status codes and JSON, so Toxiproxy's
// clients (toxiproxy-node-client, toxiproxy-cli, the Go and Ruby clients) drive it unchanged.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { randomBytes } from 'node:crypto';
import { createRequire } from 'node:module';
import { performance } from 'node:perf_hooks';
import { formatHostPort, isLoopback, type HostPort } from '../net/host-port.js';
import type { Logger } from '../logger.js';
import { PopulateError, RelayError } from './control-errors.js';
import type { RelayChangeInput, RelayInput, ToxicChangeInput } from './control-input.js';
import { readJsonBody } from './json-body.js';
import type { RelayRegistry } from './registry.js';

export interface RelayApiOptions {
  /** Default 127.0.0.1. */
  host?: string;
  /** Default 8474, Toxiproxy's; 0 picks a free port. */
  port?: number;
  /** Allow a host beyond loopback; default: the registry's `open`. */
  open?: boolean;
  /** Largest request body accepted, in bytes. Default 1 MiB. */
  bodyLimit?: number;
  /** What GET /version reports; default splicer's version. */
  version?: string;
  logger?: Logger;
}

export interface RelayApi {
  /** The address bound (port 0 resolved). */
  readonly address: HostPort;
  /** `http://host:port`, for clients. */
  readonly url: string;
  /** Stops accepting, ends keep-alive connections; the registry is left as it is. */
  close(): Promise<void>;
}

export const DEFAULT_API_PORT = 8474;
const DEFAULT_BODY_LIMIT = 1024 * 1024;
// Toxiproxy's read timeout: a request that trickles in longer than this is dropped.
const REQUEST_TIMEOUT_MS = 15_000;

const packageVersion = (createRequire(import.meta.url)('../../package.json') as { version: string }).version;

interface Request {
  params: string[];
  json(): Promise<unknown>;
}

/** What a handler answers: a JSON body with a status, or 204 when there is none. */
interface Reply {
  status: number;
  body?: unknown;
  /** Sent as is: /version is JSON that Toxiproxy writes by hand, with a newline. */
  raw?: string;
  contentType?: string;
  headers?: Record<string, string>;
}

type Handler = (request: Request) => Promise<Reply> | Reply;

interface Route {
  path: RegExp;
  methods: Partial<Record<string, Handler>>;
}

const ok = (body: unknown): Reply => ({ status: 200, body });
const created = (body: unknown): Reply => ({ status: 201, body });
const noContent: Reply = { status: 204 };

// The casts below are safe: the registry checks every field of what it is given, because the
// JSON that reaches it here is whatever a client sent.
function routes(registry: RelayRegistry, version: string): Route[] {
  const updateProxy: Handler = async ({ params: [name], json }) => ok(await registry.update(name, (await json()) as RelayChangeInput));
  const updateToxic: Handler = async ({ params: [name, toxic], json }) => ok(await registry.updateToxic(name, toxic, (await json()) as ToxicChangeInput));
  // Toxiproxy answers a failed populate with the proxies it did apply (null for none) beside the
  // error, and a client re-running a config file reads them to see how far it got.
  const populate: Handler = async ({ json }) => {
    try {
      return created({ proxies: await registry.populate((await json()) as RelayInput[]) });
    } catch (err) {
      if (!(err instanceof RelayError)) throw err;
      const proxies = err instanceof PopulateError && err.proxies.length > 0 ? err.proxies : null;
      return { status: err.status, body: { error: err.message, status: err.status, proxies } };
    }
  };
  return [
    // Byte for byte what Toxiproxy writes, space and newline included, as clients print it.
    { path: /^\/version$/, methods: { GET: () => ({ status: 200, raw: `{"version": ${JSON.stringify(version)}}\n`, contentType: 'application/json;charset=utf-8' }) } },
    { path: /^\/reset$/, methods: { POST: async () => (await registry.reset(), noContent) } },
    { path: /^\/populate$/, methods: { POST: populate } },
    {
      path: /^\/proxies$/,
      methods: {
        // An object keyed by name, as Toxiproxy and toxiproxy-node-client's getAll() expect.
        GET: () => ok(registry.list()),
        POST: async ({ json }) => created(await registry.create((await json()) as RelayInput)),
      },
    },
    {
      path: /^\/proxies\/([^/]+)$/,
      methods: {
        GET: ({ params: [name] }) => ok(registry.get(name)),
        // Toxiproxy 2.6 added PATCH and deprecated POST; clients still use both.
        POST: updateProxy,
        PATCH: updateProxy,
        DELETE: async ({ params: [name] }) => (await registry.remove(name), noContent),
      },
    },
    {
      path: /^\/proxies\/([^/]+)\/toxics$/,
      methods: {
        GET: ({ params: [name] }) => ok(registry.toxics(name)),
        // 200, not 201: Toxiproxy answers a new toxic with 200 and clients do not mind either.
        POST: async ({ params: [name], json }) => ok(await registry.addToxic(name, await json())),
      },
    },
    {
      path: /^\/proxies\/([^/]+)\/toxics\/([^/]+)$/,
      methods: {
        GET: ({ params: [name, toxic] }) => ok(registry.toxic(name, toxic)),
        POST: updateToxic,
        PATCH: updateToxic,
        DELETE: async ({ params: [name, toxic] }) => (await registry.removeToxic(name, toxic), noContent),
      },
    },
  ];
}

// Toxiproxy tags every answer with an xid (12 bytes as 20 base32hex digits) that its log lines
// carry too; some clients log it with failures.
const BASE32HEX = '0123456789abcdefghijklmnopqrstuv';
function requestId(): string {
  const bytes = randomBytes(12);
  let bits = 0;
  let value = 0;
  let id = '';
  for (const byte of bytes) {
    value = (value << 8) | byte;
    bits += 8;
    while (bits >= 5) {
      bits -= 5;
      id += BASE32HEX[(value >> bits) & 31];
    }
  }
  return bits > 0 ? id + BASE32HEX[(value << (5 - bits)) & 31] : id;
}

function send(res: http.ServerResponse, reply: Reply, id: string): void {
  const headers = { ...reply.headers, 'X-Toxiproxy-Request-Id': id };
  if (reply.body === undefined && reply.raw === undefined) {
    res.writeHead(reply.status, headers).end();
    return;
  }
  const text = reply.raw ?? JSON.stringify(reply.body);
  res.writeHead(reply.status, { ...headers, 'Content-Type': reply.contentType ?? 'application/json; charset=utf-8', 'Content-Length': Buffer.byteLength(text) }).end(text);
}

// Toxiproxy writes its errors with Go's http.Error, which ends the body with a newline.
const errorReply = (status: number, message: string): Reply => ({ status, raw: `${JSON.stringify({ error: message, status })}\n` });

function decodeSegments(match: RegExpExecArray): string[] | undefined {
  try {
    return match.slice(1).map(decodeURIComponent);
  } catch {
    return undefined;
  }
}

async function dispatch(table: Route[], req: http.IncomingMessage, bodyLimit: number): Promise<Reply> {
  // Toxiproxy refuses browsers: a web page could otherwise POST to a loopback API (no CORS
  // preflight for a text/plain body) and point a relay anywhere.
  if (req.headers['user-agent']?.startsWith('Mozilla/')) return errorReply(403, 'User agent not allowed');
  const path = (req.url ?? '/').split('?')[0];
  for (const route of table) {
    const match = route.path.exec(path);
    if (!match) continue;
    const params = decodeSegments(match);
    if (!params) return errorReply(400, `bad request: the path ${JSON.stringify(path)} is not valid percent-encoding`);
    const handler = route.methods[req.method ?? ''];
    if (!handler) return { ...errorReply(405, `method ${req.method} not allowed on ${path}`), headers: { Allow: Object.keys(route.methods).join(', ') } };
    return handler({ params, json: () => readJsonBody(req, bodyLimit) });
  }
  return errorReply(404, `no route for ${path}`);
}

export async function startRelayApi(registry: RelayRegistry, options: RelayApiOptions = {}): Promise<RelayApi> {
  const host = options.host ?? '127.0.0.1';
  const port = options.port ?? DEFAULT_API_PORT;
  const open = options.open ?? registry.open;
  if (!open && !isLoopback(host)) {
    throw new RelayError('ERR_RELAY_EXPOSURE', `the relay API would listen on ${host}, beyond this machine; pass --open (open: true) to allow it`);
  }
  const table = routes(registry, options.version ?? packageVersion);
  const bodyLimit = options.bodyLimit ?? DEFAULT_BODY_LIMIT;
  const logger = options.logger;

  const server = http.createServer({ requestTimeout: REQUEST_TIMEOUT_MS }, (req, res) => {
    const started = performance.now();
    const id = requestId();
    res.on('finish', () =>
      logger?.debug(
        { method: req.method, url: req.url, status: res.statusCode, ms: Math.round(performance.now() - started), client: req.socket.remoteAddress, requestId: id },
        'relay api request',
      ),
    );
    dispatch(table, req, bodyLimit)
      .catch((err: unknown) => {
        if (err instanceof RelayError) return errorReply(err.status, err.message);
        // A client that closes mid-request is routine, not a fault of the relay.
        if (req.destroyed && !req.complete) {
          logger?.debug({ method: req.method, url: req.url, requestId: id }, 'relay api: client went away mid-request');
          return errorReply(400, 'client went away');
        }
        logger?.warn({ err, method: req.method, url: req.url }, 'relay api: unexpected error');
        return errorReply(500, err instanceof Error ? err.message : String(err));
      })
      .then((reply) => {
        // A client that went away mid-request has nothing left to answer.
        if (res.headersSent || res.destroyed) return;
        send(res, reply, id);
      });
  });

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const bound = server.address() as AddressInfo;
  const address = { host: bound.address, port: bound.port };
  logger?.info({ api: formatHostPort(address) }, 'relay api: listening');

  let closing: Promise<void> | undefined;
  return {
    address,
    url: `http://${formatHostPort(address)}`,
    close() {
      closing ??= new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
      return closing;
    },
  };
}
