// `splicer tunnel server` and `splicer tunnel client` (its run in tunnel-client.ts).
import { Command, InvalidArgumentError, Option } from 'commander';
import { formatHostPort, isLoopback, type HostPort } from '../net/host-port.js';
import { commandEngine, engineOption, hostPortArg, integerArg, logLevelOption, onStopSignal, secondsArg, idleMs, threadsOption, idleTimeoutOption, graceOption } from './flags.js';
import { createLogger, type Logger } from '../logger.js';
import { refusedWorkersOption } from './workers.js';
import { checkMetricsFlags, metricsOpenOption, metricsOption, startMetrics } from './metrics.js';
import { tunnelRejectionReason } from '../metrics/outcomes.js';
import { fingerprintArg } from './tls-flags.js';
import { parseExpose, parsePortRanges, TunnelOptionsError, type ExposeSpec, type PortRange } from '../tunnel/options.js';
import { createTunnelServer, type TunnelServer } from '../tunnel/server.js';
import type { TunnelServerOptions } from '../tunnel/options.js';
import { configOption, configuredOptions } from './config-file.js';
import { reloadOnSignal } from './reload.js';
import { readPem, resolveToken, TLS_IS_JS, TOKEN_ENV, tokenSourceOf, warnAboutToken, type TunnelCommonCliOptions } from './tunnel-common.js';
import { runClient } from './tunnel-client.js';
import { serviceNotifier } from '../ops/systemd-notify.js';
import { addMuxOptions } from './mux-flags.js';


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
// ---------------------------------------------------------------------------------------------

interface ServerCliOptions extends TunnelCommonCliOptions {
  listen?: HostPort;
  ports?: PortRange[];
  publicHost: string;
  tlsCert?: string;
  tlsKey?: string;
  heartbeat: number;
  heartbeatTimeout: number;
  dataTimeout: number;
  handshakeTimeout: number;
  maxPool: number;
}

/** The tunnel server's options for these flags: throws (naming the flag) on any error. */
function serverOptionsFrom(options: ServerCliOptions, logger: Logger) {
  const { token, source } = resolveToken(options);
  checkMetricsFlags(options);
  if (options.heartbeatTimeout <= options.heartbeat) throw new Error('--heartbeat-timeout must be longer than --heartbeat');
  if ((options.tlsCert === undefined) !== (options.tlsKey === undefined)) throw new Error('--tls-cert and --tls-key go together');
  const tls = options.tlsCert ? { cert: readPem('--tls-cert', options.tlsCert), key: readPem('--tls-key', options.tlsKey!) } : undefined;
  if (options.dataPath === 'native' && tls) throw new Error('--data-path native cannot carry --tls-cert connections (TLS is read by net.Socket): use --data-path auto or node');
  if (options.dataPath === 'native' && options.engine === 'js') throw new Error('--data-path native needs the splice engine, not --engine js: use --data-path auto or node');
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
      dataPath: options.dataPath,
      logger,
    },
  };
}

/** The server, its failure to get the native data path named by the flag that asked for it. */
function createServer(options: TunnelServerOptions): TunnelServer {
  try {
    return createTunnelServer(options);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ERR_SPLICE_UNAVAILABLE') throw new Error(`--data-path native: ${(err as Error).message}`);
    throw err;
  }
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
  if (spliceOff && options.dataPath === 'native') throw new Error(`--data-path native needs the splice engine, which is off here (${spliceOff}): use --data-path auto or node`);
  // Without the splice engine the streams are net.Sockets whatever the addon could accept.
  const server = createServer({ ...serverOptions, ...(spliceOff ? { dataPath: 'node' as const } : {}), spliceEngine });
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
    restartOnly: ['listen', 'tlsCert', 'tlsKey', 'engine', 'dataPath', 'threads', 'grace', 'metrics', 'open'],
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
      dataPath: server.dataPath,
      spliceOff,
      config: options.config,
    },
    'tunnel server listening',
  );
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
    .addOption(
      new Option('--data-path <path>', "who holds the --listen address's and the published ports' connections: native (the addon's: no Node socket for data connections and public clients; Linux, splice engine, no TLS), node (net.Server), auto (native where it can be)")
        .choices(['auto', 'native', 'node'])
        .default('auto'),
    )
    .addOption(threadsOption())
    .addOption(graceOption('stream'))
    .addOption(metricsOption())
    .addOption(metricsOpenOption())
    .addOption(logLevelOption())
    .addOption(refusedWorkersOption('the tunnel server holds session state (logins, published ports, the data-connection pool) and runs as one process'))
    .addOption(configOption())
    .action(runServer);

  const client = tunnel
    .command('client')
    .description('publish local services through a tunnel server; reconnects (with backoff) for as long as it runs')
    .option('--server <host:port>', 'the tunnel server (required)', hostPortArg())
    .option('--token <token>', tokenHelp)
    .option('--token-file <file>', `file whose first line is the token (or set $${TOKEN_ENV})`)
    .option('--expose <spec>', 'NAME=HOST:PORT@REMOTEPORT: publish the service at HOST:PORT on the server\'s REMOTEPORT (0 or left out: the server chooses, and the client prints it); repeatable', exposeArg)
    .option('--client-id <id>', 'identity across restarts: a new session with the same id replaces the old (default: derived from the host name, --server and the --expose list)')
    .option('--pool <n>', 'data connections kept open ahead of need (saves a round trip per connection; not with --mux)', integerArg('--pool', 0, 1024), 0)
    .option('--mux', 'carry every public connection as a stream of one mux connection (yamux) to the server, next to the control connection, instead of a data connection each (the JS engine carries them)');
  addMuxOptions(client, 'with --mux');
  client
    .option('--tls', 'connect with TLS, verifying the server against the system CAs')
    .option('--tls-ca <file>', 'connect with TLS, verifying the server against this PEM CA')
    .option('--tls-fingerprint <sha256>', 'connect with TLS and accept only the certificate with this SHA-256 fingerprint (hex, colons allowed; the server logs it)', fingerprintArg)
    .option('--tls-servername <name>', 'name to verify the certificate for, and to send as SNI (default: the --server host)')
    .option('--connect-timeout <seconds>', 'give up a connection attempt to the server after this long', secondsArg('--connect-timeout'), 10)
    .option('--backoff-max <seconds>', 'longest wait between reconnection attempts (they start at 0.5 s and double)', secondsArg('--backoff-max'), 30)
    .addOption(idleTimeoutOption('stream'))
    .addOption(engineOption())
    .addOption(
      new Option('--data-path <path>', "how a spliced stream's connections to the server and the service are made: native (the addon's: no Node socket; Linux, splice engine, no TLS), node (net.Socket), auto (native where it can be); not with --mux")
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
