// `splicer tunnel server` and `splicer tunnel client`.
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import os from 'node:os';
import { Command, InvalidArgumentError, Option } from 'commander';
import { formatHostPort, isLoopback, type HostPort } from '../net/host-port.js';
import { commandEngine, engineOption, hostPortArg, integerArg, logLevelOption, onStopSignal, secondsArg, idleMs, threadsOption, idleTimeoutOption, graceOption } from './flags.js';
import { createLogger, type LOG_LEVELS, type Logger } from '../logger.js';
import { refusedWorkersOption } from './workers.js';
import { checkMetricsFlags, metricsOpenOption, metricsOption, startMetrics } from './metrics.js';
import { tunnelRejectionReason } from '../metrics/outcomes.js';
import type { EngineChoice } from '../engine/contract.js';
import { createTunnelClient, type TunnelClient } from '../tunnel/client.js';
import type { TunnelClientOptions } from '../tunnel/options.js';
import type { SpliceEngine } from '../engine/splice/engine.js';
import { parseFingerprint } from '../tunnel/server-dialer.js';
import { parseExpose, parsePortRanges, TunnelOptionsError, type ExposeSpec, type PortRange } from '../tunnel/options.js';
import { createTunnelServer } from '../tunnel/server.js';
import { configOption, configuredOptions } from './config-file.js';
import { changedKeys, reloadOnSignal } from './reload.js';
import { serviceNotifier } from '../ops/systemd-notify.js';

export const TOKEN_ENV = 'SPLICER_TUNNEL_TOKEN';
/** Below this many characters a token is warned about: the auth exchange is only as strong as it. */
const SHORT_TOKEN = 16;

type LogLevel = (typeof LOG_LEVELS)[number];

interface TokenOptions {
  token?: string;
  tokenFile?: string;
}

/** --token, else --token-file, else $SPLICER_TUNNEL_TOKEN; never empty. */
export function resolveToken(options: TokenOptions, env: NodeJS.ProcessEnv = process.env): { token: string; source: string } {
  if (options.token !== undefined && options.tokenFile !== undefined) throw new Error('give --token or --token-file, not both');
  let token: string | undefined;
  let source: string;
  if (options.token !== undefined) {
    token = options.token;
    source = '--token';
  } else if (options.tokenFile !== undefined) {
    try {
      token = readFileSync(options.tokenFile, 'utf8').split(/\r?\n/)[0];
    } catch (err) {
      throw new Error(`--token-file: cannot read ${options.tokenFile}: ${(err as NodeJS.ErrnoException).code ?? 'error'}`);
    }
    source = '--token-file';
  } else {
    token = env[TOKEN_ENV];
    source = TOKEN_ENV;
  }
  if (!token) throw new Error(`refusing to start without a token: give --token-file FILE or set ${TOKEN_ENV} (or --token, which shows in ps)`);
  return { token, source };
}

/** A `token` key of a config file is not in ps, as --token is. */
const tokenSourceOf = (command: Command, source: string) => (source === '--token' && command.getOptionValueSource('token') !== 'cli' ? '--config' : source);

function warnAboutToken(logger: Logger, token: string, source: string): void {
  if (source === '--token') logger.warn('--token shows in ps and in shell history: prefer --token-file or ' + TOKEN_ENV);
  if (token.length < SHORT_TOKEN) logger.warn({ length: token.length }, `the token is short: use ${SHORT_TOKEN} or more random characters (openssl rand -hex 32)`);
}

const wrap =
  <T>(parse: (value: string) => T) =>
  (value: string): T => {
    try {
      return parse(value);
    } catch (err) {
      if (err instanceof TunnelOptionsError) throw new InvalidArgumentError(err.message);
      throw err;
    }
  };

const portRangesArg = wrap(parsePortRanges);
const exposeArg = (value: string, previous: ExposeSpec[] | undefined): ExposeSpec[] => [...(previous ?? []), wrap(parseExpose)(value)];
const fingerprintArg = (value: string): string => {
  try {
    parseFingerprint(value);
    return value;
  } catch (err) {
    throw new InvalidArgumentError((err as Error).message);
  }
};

const TLS_IS_JS = 'TLS data connections are carried by the JS engine';

// ---------------------------------------------------------------------------------------------

interface ServerCliOptions extends TokenOptions {
  listen?: HostPort;
  config?: string;
  ports?: PortRange[];
  publicHost: string;
  tlsCert?: string;
  tlsKey?: string;
  heartbeat: number;
  heartbeatTimeout: number;
  dataTimeout: number;
  handshakeTimeout: number;
  maxPool: number;
  idleTimeout: number;
  engine: EngineChoice;
  threads: number;
  grace: number;
  metrics?: HostPort;
  open?: boolean;
  logLevel: LogLevel;
}

function readPem(flag: string, file: string): Buffer {
  try {
    return readFileSync(file);
  } catch (err) {
    throw new Error(`${flag}: cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? 'error'}`);
  }
}

/** The tunnel server's options for these flags: throws (naming the flag) on any error. */
function serverOptionsFrom(options: ServerCliOptions, logger: Logger) {
  const { token, source } = resolveToken(options);
  checkMetricsFlags(options);
  if (options.heartbeatTimeout <= options.heartbeat) throw new Error('--heartbeat-timeout must be longer than --heartbeat');
  if ((options.tlsCert === undefined) !== (options.tlsKey === undefined)) throw new Error('--tls-cert and --tls-key go together');
  const tls = options.tlsCert ? { cert: readPem('--tls-cert', options.tlsCert), key: readPem('--tls-key', options.tlsKey!) } : undefined;
  return {
    token,
    tokenSource: source,
    options: {
      listen: options.listen!,
      token,
      ports: options.ports,
      publicHost: options.publicHost,
      tls,
      heartbeatInterval: Math.round(options.heartbeat * 1000),
      heartbeatTimeout: Math.round(options.heartbeatTimeout * 1000),
      dataTimeout: Math.round(options.dataTimeout * 1000),
      handshakeTimeout: Math.round(options.handshakeTimeout * 1000),
      maxPool: options.maxPool,
      idleTimeout: idleMs(options.idleTimeout),
      engine: options.engine,
      logger,
    },
  };
}

/** --listen is required, from the command line or the file. */
function checkServer(options: ServerCliOptions): ServerCliOptions {
  if (!options.listen) throw new Error("required option '--listen <host:port>' not specified (on the command line or as `listen` in --config)");
  return options;
}

async function runServer(cli: ServerCliOptions, command: Command): Promise<void> {
  const read = () => checkServer(configuredOptions(command, cli)());
  const options = read();
  const logger = createLogger(options.logLevel);
  const notifier = serviceNotifier(logger);
  const { token, tokenSource, options: serverOptions } = serverOptionsFrom(options, logger);
  const tls = serverOptions.tls;
  const { engine, spliceEngine, spliceOff } = commandEngine(options.engine, { threads: options.threads }, tls ? TLS_IS_JS : undefined);
  warnAboutToken(logger, token, tokenSourceOf(command, tokenSource));
  const server = createTunnelServer({ ...serverOptions, spliceEngine });
  const metrics = await startMetrics(
    options,
    {
      service: 'tunnel',
      labels: { role: 'server' },
      activeConnections: () => server.activeConnections,
      spliceEngine,
      gauges: [
        { name: 'splicer_tunnel_sessions', help: 'Tunnel clients logged in now', read: () => server.sessions().length },
        { name: 'splicer_tunnel_tunnels_up', help: 'Tunnels published now', read: () => server.tunnels().length },
      ],
    },
    logger,
    false,
  );
  if (metrics) {
    server.on('connectionClose', (record) => metrics.connectionEnded({ outcome: record.reason, durationMs: record.durationMs }));
    server.on('rejected', (info) => {
      const reason = tunnelRejectionReason(info.code);
      if (reason) metrics.handshakeFailed(reason);
    });
  }
  const bound = await server.listen();
  // Before the startup line: whoever sees it may stop the process at once.
  onStopSignal(logger, options.grace, server, spliceEngine, notifier);
  reloadOnSignal({
    logger,
    notifier,
    read,
    initial: options,
    restartOnly: ['listen', 'tlsCert', 'tlsKey', 'engine', 'threads', 'grace', 'metrics', 'open'],
    apply: async (next) => {
      const { options: nextOptions } = serverOptionsFrom(next, logger);
      server.reconfigure({ ...nextOptions, spliceEngine });
      logger.level = next.logLevel;
    },
  });
  logger.info(
    {
      listen: formatHostPort(bound),
      publicHost: options.publicHost,
      exposed: !isLoopback(options.publicHost) || undefined,
      ports: (options.ports ?? [{ from: 1024, to: 65535 }]).map((r) => (r.from === r.to ? `${r.from}` : `${r.from}-${r.to}`)).join(','),
      tls: tls ? { fingerprint: server.fingerprint } : false,
      engine,
      spliceOff,
      config: options.config,
    },
    'tunnel server listening',
  );
  notifier.ready();
}

// ---------------------------------------------------------------------------------------------

interface ClientCliOptions extends TokenOptions {
  server: HostPort;
  config?: string;
  expose?: ExposeSpec[];
  clientId?: string;
  pool: number;
  tls?: boolean;
  tlsCa?: string;
  tlsFingerprint?: string;
  tlsServername?: string;
  connectTimeout: number;
  backoffMax: number;
  idleTimeout: number;
  engine: EngineChoice;
  dataPath: 'auto' | 'native' | 'node';
  threads: number;
  grace: number;
  metrics?: HostPort;
  open?: boolean;
  logLevel: LogLevel;
}

/** The same host and the same tunnels give the same id, so a restarted client replaces its stale session. */
export function defaultClientId(server: HostPort, expose: ExposeSpec[]): string {
  const what = [formatHostPort(server), ...expose.map((e) => `${e.name}=${formatHostPort(e.local)}@${e.remotePort}`).sort()].join(' ');
  return `${os.hostname()}/${createHash('sha256').update(what).digest('hex').slice(0, 12)}`;
}

/** --server is required, from the command line or the file. */
function checkClient(options: ClientCliOptions): ClientCliOptions {
  if (!options.server) throw new Error("required option '--server <host:port>' not specified (on the command line or as `server` in --config)");
  resolveToken(options);
  if ((options.expose ?? []).length === 0) throw new Error('give at least one --expose NAME=HOST:PORT@REMOTEPORT');
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

async function runClient(cli: ClientCliOptions, command: Command): Promise<void> {
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

// ---------------------------------------------------------------------------------------------

const tokenHelp = `shared secret; shows in ps: prefer --token-file or $${TOKEN_ENV}`;

export function tunnelCommand(): Command {
  const tunnel = new Command('tunnel').description('publish a service from behind NAT: a tunnel server on a public machine, a tunnel client next to the service');

  tunnel
    .command('server')
    .description('accept tunnel clients on --listen and publish their services on ports of this machine')
    .option('--listen <host:port>', 'address tunnel clients connect to (control and data connections; required)', hostPortArg(undefined, true))
    .option('--token <token>', tokenHelp)
    .option('--token-file <file>', `file whose first line is the token (or set $${TOKEN_ENV})`)
    .option('--ports <ranges>', 'ports tunnels may be published on, e.g. 20000-20100 or 8080,9000-9100 (default: 1024-65535)', portRangesArg)
    .option('--public-host <host>', 'address published ports listen on; 0.0.0.0 or :: to reach them from other machines', '127.0.0.1')
    .option('--tls-cert <file>', 'PEM certificate: control and data connections use TLS (the JS engine carries the data)')
    .option('--tls-key <file>', 'PEM private key of --tls-cert')
    .option('--heartbeat <seconds>', 'ping each client this often', secondsArg('--heartbeat'), 10)
    .option('--heartbeat-timeout <seconds>', 'drop a client (and free its ports) after this long without a word', secondsArg('--heartbeat-timeout'), 30)
    .option('--data-timeout <seconds>', 'reset a public client when no data connection has come by then', secondsArg('--data-timeout'), 10)
    .option('--handshake-timeout <seconds>', 'close a connection that has not logged in (or sent its data header) by then', secondsArg('--handshake-timeout'), 10)
    .option('--max-pool <n>', 'most idle data connections a client may keep open (its --pool is capped to this)', integerArg('--max-pool', 0, 1024), 64)
    .addOption(idleTimeoutOption('stream'))
    .addOption(engineOption())
    .addOption(threadsOption())
    .addOption(graceOption('stream'))
    .addOption(metricsOption())
    .addOption(metricsOpenOption())
    .addOption(logLevelOption())
    .addOption(refusedWorkersOption('the tunnel server holds session state (logins, published ports, the data-connection pool) and runs as one process'))
    .addOption(configOption())
    .action(runServer);

  tunnel
    .command('client')
    .description('publish local services through a tunnel server; reconnects (with backoff) for as long as it runs')
    .option('--server <host:port>', 'the tunnel server (required)', hostPortArg())
    .option('--token <token>', tokenHelp)
    .option('--token-file <file>', `file whose first line is the token (or set $${TOKEN_ENV})`)
    .option('--expose <spec>', 'NAME=HOST:PORT@REMOTEPORT: publish the service at HOST:PORT on the server\'s REMOTEPORT (0 or left out: the server chooses, and the client prints it); repeatable', exposeArg)
    .option('--client-id <id>', 'identity across restarts: a new session with the same id replaces the old (default: derived from the host name, --server and the --expose list)')
    .option('--pool <n>', 'data connections kept open ahead of need (saves a round trip per connection)', integerArg('--pool', 0, 1024), 0)
    .option('--tls', 'connect with TLS, verifying the server against the system CAs')
    .option('--tls-ca <file>', 'connect with TLS, verifying the server against this PEM CA')
    .option('--tls-fingerprint <sha256>', 'connect with TLS and accept only the certificate with this SHA-256 fingerprint (hex, colons allowed; the server logs it)', fingerprintArg)
    .option('--tls-servername <name>', 'name to verify the certificate for, and to send as SNI (default: the --server host)')
    .option('--connect-timeout <seconds>', 'give up a connection attempt to the server after this long', secondsArg('--connect-timeout'), 10)
    .option('--backoff-max <seconds>', 'longest wait between reconnection attempts (they start at 0.5 s and double)', secondsArg('--backoff-max'), 30)
    .addOption(idleTimeoutOption('stream'))
    .addOption(engineOption())
    .addOption(
      new Option('--data-path <path>', "how a spliced stream's connections to the server and the service are made: native (the addon's: no Node socket; Linux, splice engine, no TLS), node (net.Socket), auto (native where it can be)")
        .choices(['auto', 'native', 'node'])
        .default('auto'),
    )
    .addOption(threadsOption())
    .addOption(graceOption('stream'))
    .addOption(metricsOption())
    .addOption(metricsOpenOption())
    .addOption(logLevelOption())
    .addOption(refusedWorkersOption('the tunnel client holds one session with its server and runs as one process'))
    .addOption(configOption())
    .action(runClient);

  return tunnel;
}
