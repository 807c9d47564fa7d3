// `splicer tunnel client`: its options, and the client a reload replaces.
import { createHash } from 'node:crypto';
import os from 'node:os';
import type { Command } from 'commander';
import { formatHostPort, type HostPort } from '../net/host-port.js';
import { commandEngine, onStopSignal, idleMs } from './flags.js';
import { createLogger, type Logger } from '../logger.js';
import { checkMetricsFlags, startMetrics } from './metrics.js';
import { createTunnelClient, type TunnelClient } from '../tunnel/client.js';
import type { ExposeSpec, TunnelClientOptions } from '../tunnel/options.js';
import type { SpliceEngine } from '../engine/splice/engine.js';
import { configuredOptions } from './config-file.js';
import { changedKeys, reloadOnSignal } from './reload.js';
import { serviceNotifier } from '../ops/systemd-notify.js';
import { readPem, resolveToken, TLS_IS_JS, tokenSourceOf, warnAboutToken, type TunnelCommonCliOptions } from './tunnel-common.js';

export interface ClientCliOptions extends TunnelCommonCliOptions {
  server: HostPort;
  expose?: ExposeSpec[];
  clientId?: string;
  pool: number;
  mux?: boolean;
  muxWindow: number;
  muxMaxStreams: number;
  muxKeepalive: number;
  tls?: boolean;
  tlsCa?: string;
  tlsFingerprint?: string;
  tlsServername?: string;
  connectTimeout: number;
  backoffMax: number;
}

/** The same host and the same tunnels give the same id, so a restarted client replaces its stale session. */
export function defaultClientId(server: HostPort, expose: ExposeSpec[]): string {
  const what = [formatHostPort(server), ...expose.map((e) => `${e.name}=${formatHostPort(e.local)}@${e.remotePort}`).sort()].join(' ');
  return `${os.hostname()}/${createHash('sha256').update(what).digest('hex').slice(0, 12)}`;
}

/** What --mux rules out: each of these is about a connection per stream, which a mux stream is not. */
function checkMux(options: ClientCliOptions): void {
  if (options.pool > 0) throw new Error('--pool does not apply with --mux: streams share the mux connection, there are no data connections to keep ready');
  if (options.dataPath !== 'auto') throw new Error('--data-path does not apply with --mux: a mux stream has no connection of its own');
  if (options.engine === 'splice') throw new Error('--engine splice cannot carry mux streams (their bytes are framed in user space): use --engine auto or js');
}

/** --server is required, from the command line or the file. */
function checkClient(options: ClientCliOptions): ClientCliOptions {
  if (!options.server) throw new Error("required option '--server <host:port>' not specified (on the command line or as `server` in --config)");
  resolveToken(options);
  if ((options.expose ?? []).length === 0) throw new Error('give at least one --expose NAME=HOST:PORT@REMOTEPORT');
  if (options.mux) checkMux(options);
  return options;
}

/** What a running client cannot change; everything else of its session a reload applies by logging in anew. */
const CLIENT_RESTART_ONLY = ['engine', 'threads', 'grace', 'metrics', 'open'] as const;

/** What a tunnel client is made of, from these options: throws (naming the flag) on any error. */
function clientOptionsFrom(options: ClientCliOptions, command: Command, logger: Logger, spliceEngine: SpliceEngine | undefined) {
  const { token, source } = resolveToken(options);
  const expose = options.expose ?? [];
  const wantsTls = options.tls || options.tlsCa !== undefined || options.tlsFingerprint !== undefined;
  if (options.tlsCa !== undefined && options.tlsFingerprint !== undefined) throw new Error('give --tls-ca or --tls-fingerprint, not both');
  return {
    wantsTls,
    token,
    tokenSource: tokenSourceOf(command, source),
    client: {
      server: options.server,
      token,
      tunnels: expose.map((e) => ({ name: e.name, local: e.local, remotePort: e.remotePort })),
      clientId: options.clientId ?? defaultClientId(options.server, expose),
      pool: options.pool,
      mux: options.mux
        ? { maxWindow: options.muxWindow, maxStreams: options.muxMaxStreams, keepaliveInterval: Math.round(options.muxKeepalive * 1000) }
        : (false as const),
      tls: wantsTls
        ? { ca: options.tlsCa !== undefined ? readPem('--tls-ca', options.tlsCa) : undefined, fingerprint: options.tlsFingerprint, servername: options.tlsServername }
        : (false as const),
      connectTimeout: Math.round(options.connectTimeout * 1000),
      reconnect: { maxDelay: Math.max(1, Math.round(options.backoffMax * 1000)) },
      idleTimeout: idleMs(options.idleTimeout),
      engine: options.engine,
      dataPath: options.dataPath,
      spliceEngine,
      logger,
    },
  };
}

/**
 * The running tunnel client and the ones a reload replaced: those have logged out (their tunnels
 * are the new client's now) and carry their open streams to their end.
 */
class ClientGeneration {
  current: TunnelClient;
  readonly #retiring = new Set<TunnelClient>();

  constructor(first: TunnelClient) {
    this.current = first;
  }

  get activeConnections(): number {
    let n = this.current.activeConnections;
    for (const client of this.#retiring) n += client.activeConnections;
    return n;
  }

  /** `next` takes over: the current client logs out at once, its streams go on until they end. */
  replace(next: TunnelClient): void {
    const old = this.current;
    this.current = next;
    this.#retiring.add(old);
    // The longest a timer waits: the streams end by themselves (or by the stop's own grace).
    void old.close(2 ** 31 - 1).finally(() => this.#retiring.delete(old));
    next.start();
  }

  async close(graceMs: number): Promise<void> {
    await Promise.all([this.current, ...this.#retiring].map((client) => client.close(graceMs)));
  }
}

export async function runClient(cli: ClientCliOptions, command: Command): Promise<void> {
  const read = () => checkClient(configuredOptions(command, cli)());
  let options = read();
  const logger = createLogger(options.logLevel);
  const notifier = serviceNotifier(logger);
  checkMetricsFlags(options);
  const wantsTlsAtStart = options.tls || options.tlsCa !== undefined || options.tlsFingerprint !== undefined;
  const { engine, spliceEngine, spliceOff } = commandEngine(options.engine, { threads: options.threads }, wantsTlsAtStart ? TLS_IS_JS : undefined);
  const first = clientOptionsFrom(options, command, logger, spliceEngine);
  warnAboutToken(logger, first.token, first.tokenSource);
  const makeClient = (clientOptions: TunnelClientOptions): TunnelClient => {
    const client = createTunnelClient(clientOptions);
    if (metrics) client.on('connectionClose', (record) => metrics.connectionEnded({ outcome: record.reason, durationMs: record.durationMs }));
    // Besides the JSON log, one line a person can read: where each service is published.
    client.on('tunnelUp', ({ name, local, remote }) => process.stderr.write(`splicer tunnel: ${name} ${formatHostPort(remote)} -> ${local}\n`));
    client.on('tunnelRefused', ({ name, code, message }) => process.stderr.write(`splicer tunnel: ${name} refused (${code}): ${message}\n`));
    return client;
  };
  let clients: ClientGeneration | undefined;
  const metrics = await startMetrics(
    options,
    {
      service: 'tunnel',
      labels: { role: 'client' },
      activeConnections: () => clients?.activeConnections ?? 0,
      spliceEngine,
      gauges: [
        { name: 'splicer_tunnel_sessions', help: 'Sessions with the tunnel server now (1 while logged in)', read: () => (clients?.current.connected ? 1 : 0) },
        { name: 'splicer_tunnel_tunnels_up', help: 'Tunnels the server publishes for this client now', read: () => clients?.current.tunnels().filter((t) => t.state === 'up').length ?? 0 },
      ],
    },
    logger,
    false,
  );
  clients = new ClientGeneration(makeClient(first.client));
  const generation = clients;
  // Before the startup line: whoever sees it may stop the process at once.
  onStopSignal(logger, options.grace, generation, spliceEngine, notifier);
  reloadOnSignal({
    logger,
    notifier,
    read,
    initial: options,
    restartOnly: CLIENT_RESTART_ONLY,
    apply: async (next) => {
      const sessionChanges = changedKeys(options, next).filter((key) => key !== 'log-level' && key !== 'config');
      logger.level = next.logLevel;
      // The session is made of the rest: a new client logs in with it, and the old one logs out.
      if (sessionChanges.length === 0) return;
      const made = clientOptionsFrom(next, command, logger, spliceEngine);
      if (made.wantsTls !== wantsTlsAtStart) throw new Error('--tls, --tls-ca and --tls-fingerprint need a restart to be turned on or off (the engine was chosen for them)');
      const replacement = makeClient(made.client);
      generation.replace(replacement);
      options = next;
      return { clientId: replacement.clientId, tunnels: (next.expose ?? []).map((e) => `${e.name}=${formatHostPort(e.local)}@${e.remotePort}`) };
    },
  });
  const expose = options.expose ?? [];
  logger.info(
    {
      server: formatHostPort(options.server),
      clientId: generation.current.clientId,
      tunnels: expose.map((e) => `${e.name}=${formatHostPort(e.local)}@${e.remotePort}`),
      pool: options.pool,
      mux: options.mux === true || undefined,
      tls: wantsTlsAtStart ? (options.tlsFingerprint ? 'pinned' : 'ca') : false,
      engine,
      spliceOff,
    },
    'tunnel client starting',
  );
  generation.current.start();
  // Ready once it runs: it reconnects for as long as it lives, so a server that is down at boot
  // is a state of the service (logged, retried), not a failed start.
  notifier.ready();
}
