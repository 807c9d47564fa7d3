// Options of the tunnel server and client, checked with zod, and the text forms the CLI takes
// (`--ports 20000-20100,30000`, `--expose web=127.0.0.1:8080@0`).
import { z } from 'zod';
import { AddressError, parseHostPort, type HostPort } from '../net/host-port.js';
import type { Logger } from '../logger.js';
import { SpliceEngine } from '../engine/splice/engine.js';
import type { EngineChoice } from '../engine/contract.js';
import { MAX_POOL, MAX_TUNNELS_PER_MESSAGE, TUNNEL_NAME } from './protocol.js';
import { parseFingerprint, type ClientTlsOptions } from './server-dialer.js';

export class TunnelOptionsError extends Error {
  readonly code = 'ERR_TUNNEL_OPTIONS';
  override name = 'TunnelOptionsError';
}

export interface PortRange {
  from: number;
  to: number;
}

/** `20000-20100`, `8080`, or a comma-separated list of both. */
export function parsePortRanges(text: string): PortRange[] {
  const ranges = text.split(',').map((part) => {
    const m = /^\s*(\d+)\s*(?:-\s*(\d+)\s*)?$/.exec(part);
    if (!m) throw new TunnelOptionsError(`"${part.trim()}" is not a port or a range of ports (N or N-M)`);
    const from = Number(m[1]);
    const to = m[2] === undefined ? from : Number(m[2]);
    if (from < 1 || to > 65535 || from > to) throw new TunnelOptionsError(`port range ${from}-${to} is not within 1-65535 in ascending order`);
    return { from, to };
  });
  return ranges;
}

export interface ExposeSpec {
  name: string;
  /** The service, as the client reaches it. */
  local: HostPort;
  /** The port to publish it on at the server; 0 lets the server choose. */
  remotePort: number;
}

/** `NAME=HOST:PORT@REMOTEPORT` (`@REMOTEPORT` may be left out: 0). HOST may be `[::1]`, or empty for 127.0.0.1. */
export function parseExpose(text: string): ExposeSpec {
  const eq = text.indexOf('=');
  if (eq < 0) throw new TunnelOptionsError(`"${text}": expected NAME=HOST:PORT@REMOTEPORT`);
  const name = text.slice(0, eq);
  if (!TUNNEL_NAME.test(name)) throw new TunnelOptionsError(`"${text}": the name "${name}" must be 1-64 of [A-Za-z0-9_.-], starting with a letter or digit`);
  let rest = text.slice(eq + 1);
  let remotePort = 0;
  const at = rest.lastIndexOf('@');
  if (at >= 0) {
    const portText = rest.slice(at + 1);
    if (!/^\d+$/.test(portText) || Number(portText) > 65535) throw new TunnelOptionsError(`"${text}": remote port "${portText}" is not a port (0-65535; 0 lets the server choose)`);
    remotePort = Number(portText);
    rest = rest.slice(0, at);
  }
  try {
    return { name, local: parseHostPort(rest, { defaultHost: '127.0.0.1' }), remotePort };
  } catch (err) {
    if (err instanceof AddressError) throw new TunnelOptionsError(`"${text}": ${err.message}`);
    throw err;
  }
}

const hostPort = z.object({ host: z.string().min(1), port: z.number().int().min(0).max(65535) });
const pem = z.union([z.string().min(1), z.instanceof(Buffer)]);
const msOption = (fallback: number) => z.number().int().min(1).max(86_400_000).default(fallback);
const engine = z.enum(['auto', 'splice', 'js']).default('auto');
const token = z
  .union([z.string(), z.instanceof(Buffer)])
  .refine((t) => t.length > 0, 'a token is required: the server refuses to run without one');
const common = {
  token,
  engine,
  spliceEngine: z.instanceof(SpliceEngine).optional(),
  idleTimeout: z.number().int().min(0).default(0),
  logger: z.custom<Logger>((value) => value === undefined || (typeof value === 'object' && value !== null && 'info' in value)).optional(),
};

export const TunnelServerOptionsSchema = z
  .object({
    listen: hostPort,
    ...common,
    /** Ports tunnels may be published on (default 1024-65535). */
    ports: z.array(z.object({ from: z.number().int().min(1).max(65535), to: z.number().int().min(1).max(65535) })).min(1).default([{ from: 1024, to: 65535 }]),
    /** Address the published ports listen on: loopback unless said otherwise. */
    publicHost: z.string().min(1).default('127.0.0.1'),
    tls: z.object({ cert: pem, key: pem }).optional(),
    heartbeatInterval: msOption(10_000),
    heartbeatTimeout: msOption(30_000),
    handshakeTimeout: msOption(10_000),
    /** How long a public client waits for a data connection before it is reset. */
    dataTimeout: msOption(10_000),
    maxPool: z.number().int().min(0).max(MAX_POOL).default(64),
    maxTunnelsPerClient: z.number().int().min(1).max(MAX_TUNNELS_PER_MESSAGE).default(MAX_TUNNELS_PER_MESSAGE),
    maxSessions: z.number().int().min(1).default(1024),
    /** Public clients waiting for a data connection, per client session; more are reset at once. */
    maxWaiting: z.number().int().min(1).default(4096),
    /** Connections that have not finished their handshake, at once; more are closed at once. */
    maxUnauthenticated: z.number().int().min(1).default(256),
    /**
     * Who holds the listen address's and the published ports' connections: `native`, the addon's
     * acceptor (no net.Socket for data connections and public clients; Linux, splice engine, no
     * TLS); `node`, net.Server; `auto`, native where it can be.
     */
    dataPath: z.enum(['auto', 'native', 'node']).default('auto'),
  })
  .superRefine((o, ctx) => {
    if (o.heartbeatTimeout <= o.heartbeatInterval) ctx.addIssue({ code: 'custom', path: ['heartbeatTimeout'], message: 'must be longer than heartbeatInterval' });
    for (const r of o.ports) if (r.from > r.to) ctx.addIssue({ code: 'custom', path: ['ports'], message: `range ${r.from}-${r.to} is not ascending` });
    if (o.tls && o.engine === 'splice') ctx.addIssue({ code: 'custom', path: ['engine'], message: "TLS data connections cannot be spliced: use engine 'auto' or 'js'" });
    if (o.tls && o.dataPath === 'native') ctx.addIssue({ code: 'custom', path: ['dataPath'], message: "TLS connections are carried by net.Socket: use dataPath 'auto' or 'node'" });
  });

export const TunnelClientOptionsSchema = z
  .object({
    server: hostPort,
    ...common,
    tunnels: z
      .array(z.object({ name: z.string().regex(TUNNEL_NAME, 'must be 1-64 of [A-Za-z0-9_.-], starting with a letter or digit'), local: hostPort, remotePort: z.number().int().min(0).max(65535).default(0) }))
      .min(1, 'at least one tunnel is needed')
      .max(MAX_TUNNELS_PER_MESSAGE),
    /** Identifies this client across reconnects: a new session with the same id replaces the old one. */
    clientId: z.string().min(1).max(128).optional(),
    /** Data connections kept open and authenticated ahead of need. */
    pool: z.number().int().min(0).max(MAX_POOL).default(0),
    tls: z
      .union([
        z.boolean(),
        z.object({
          ca: pem.optional(),
          fingerprint: z.string().refine((f) => {
            try {
              parseFingerprint(f);
              return true;
            } catch {
              return false;
            }
          }, 'not a SHA-256 fingerprint (64 hex digits, ":" separators allowed)').optional(),
          servername: z.string().optional(),
        }),
      ])
      .default(false),
    /** TCP (and TLS) connect to the server, for control and data connections. */
    connectTimeout: msOption(10_000),
    /** Login (hello to welcome). */
    handshakeTimeout: msOption(10_000),
    /** Connecting to the local service; past it the public client is reset. */
    localConnectTimeout: msOption(10_000),
    /**
     * How a spliced stream's two connections (to the server, to the service) are made: `native`,
     * the addon's (no net.Socket; Linux, splice engine, no TLS); `node`, net.Socket; `auto`,
     * native where it can be.
     */
    dataPath: z.enum(['auto', 'native', 'node']).default('auto'),
    reconnect: z
      .object({ initialDelay: msOption(500), maxDelay: msOption(30_000), stableAfter: msOption(10_000) })
      .prefault({}),
    /**
     * Carry the streams on one mux connection (yamux) to the server instead of a data connection
     * each; an object sets that session's options. A server that does not speak it gets data
     * connections as before.
     */
    mux: z
      .union([
        z.boolean(),
        z
          .object({
            maxWindow: z.number().int().min(256 * 1024).max(1024 * 1024 * 1024).optional(),
            maxStreams: z.number().int().min(1).max(1 << 20).optional(),
            keepaliveInterval: z.number().int().min(0).max(86_400_000).optional(),
            keepaliveTimeout: z.number().int().min(1).max(3_600_000).optional(),
          })
          .strict(),
      ])
      .default(false),
  })
  .superRefine((o, ctx) => {
    const names = new Set<string>();
    o.tunnels.forEach((t, i) => {
      if (names.has(t.name)) ctx.addIssue({ code: 'custom', path: ['tunnels', i, 'name'], message: `tunnel name "${t.name}" is given twice` });
      names.add(t.name);
    });
    if (o.tls && o.engine === 'splice') ctx.addIssue({ code: 'custom', path: ['engine'], message: "TLS data connections cannot be spliced: use engine 'auto' or 'js'" });
    if (o.mux !== false) {
      if (o.engine === 'splice') ctx.addIssue({ code: 'custom', path: ['engine'], message: "mux streams are carried by the JS engine: use engine 'auto' or 'js'" });
      if (o.pool > 0) ctx.addIssue({ code: 'custom', path: ['pool'], message: 'a pool of data connections does not apply with mux: streams need no connection of their own' });
      if (o.dataPath === 'native') ctx.addIssue({ code: 'custom', path: ['dataPath'], message: "mux streams are no connections of their own: use dataPath 'auto' or 'node'" });
    }
    if (o.tls && o.dataPath === 'native') ctx.addIssue({ code: 'custom', path: ['dataPath'], message: "TLS data connections are carried by net.Socket: use dataPath 'auto' or 'node'" });
  });

export type TunnelServerOptions = z.input<typeof TunnelServerOptionsSchema>;
export type ResolvedServerOptions = z.output<typeof TunnelServerOptionsSchema>;
export type TunnelClientOptions = z.input<typeof TunnelClientOptionsSchema>;
export type ResolvedClientOptions = z.output<typeof TunnelClientOptionsSchema>;
export type { ClientTlsOptions, EngineChoice };

export function parseOptions<S extends z.ZodType>(schema: S, input: unknown, what: string): z.output<S> {
  const result = schema.safeParse(input);
  if (result.success) return result.data;
  // Messages name the field, never the value: the options hold the token.
  const issues = result.error.issues.map((issue) => `${issue.path.join('.') || what}: ${issue.message}`);
  throw new TunnelOptionsError(`${what} options: ${issues.join('; ')}`);
}

/** The client's mux session options, or undefined without mux. */
export function clientMux(mux: ResolvedClientOptions['mux']): { maxWindow?: number; maxStreams?: number; keepaliveInterval?: number; keepaliveTimeout?: number } | undefined {
  if (mux === false) return undefined;
  return mux === true ? {} : mux;
}

/** The client's TLS settings, or undefined for plain TCP. */
export function clientTls(tls: ResolvedClientOptions['tls']): ClientTlsOptions | undefined {
  if (tls === false) return undefined;
  if (tls === true) return {};
  return tls;
}
