// `splicer forward`: forward every connection on --listen to one upstream.
import { Command, Option } from 'commander';
import { acceptOption, commandEngine, engineOption, logLevelOption, onStopSignal, secondsArg, idleMs, threadsOption, idleTimeoutOption, graceOption } from './flags.js';
import { formatHostPort, isLoopback, type HostPort } from '../net/host-port.js';
import { Forwarder } from '../forwarder/server.js';
import type { LOG_LEVELS } from '../logger.js';
import { commandLogger, reusePortListenFd, superviseWorkers, workerListening, workerRole, workersOption, workersUnavailable } from './workers.js';
import type { EngineChoice } from '../engine/contract.js';
import type { AcceptPath } from '../engine/splice/acceptor.js';
import { checkMetricsFlags, metricsOption, startMetrics } from './metrics.js';
import { acceptProxyProtocolOption, sendProxyProtocolOption } from './proxy-protocol-flags.js';
import type { ProxyProtocolVersion } from '../net/proxy-header.js';
import { configOption, configuredOptions } from './config-file.js';
import { reloadOnSignal } from './reload.js';
import { serviceNotifier } from '../ops/systemd-notify.js';
import { addTransportOptions, checkTransports, runTransportForward, transportAddressArg, transportAddressListArg, usesTransport, type TransportForwardCliOptions } from './forward-transport.js';

interface ForwardCliOptions extends Omit<TransportForwardCliOptions, 'to' | 'sendProxyProtocol'> {
  to?: TransportForwardCliOptions['to'];
  engine: EngineChoice;
  accept: AcceptPath;
  threads: number;
  idleTimeout: number;
  connectTimeout: number;
  grace: number;
  workers: number;
  metrics?: HostPort;
  open?: boolean;
  logLevel: (typeof LOG_LEVELS)[number];
  acceptProxyProtocol: boolean;
  sendProxyProtocol?: ProxyProtocolVersion;
  proxyHeaderTimeout: number;
}

async function runForward(cli: ForwardCliOptions, command: Command): Promise<void> {
  const read = configuredOptions(command, cli);
  const options = checkForward(read());
  if (usesTransport({ listen: options.listen, to: options.to! })) {
    const reread = () => {
      const next = checkForward(read());
      return { ...next, to: next.to! };
    };
    return runTransportForward({ ...options, to: options.to! }, { reread, settings: command.options.map((option) => option.attributeName()) });
  }
  checkTransports({ ...options, to: options.to! });
  const role = workerRole();
  checkMetricsFlags(options);
  if (options.workers > 1 && !role) {
    const unavailable = workersUnavailable();
    if (unavailable) throw new Error(unavailable);
    return superviseWorkers({ workers: options.workers, grace: options.grace, logLevel: options.logLevel, metrics: options, validate: () => void checkForward(read()) });
  }
  const logger = commandLogger(options.logLevel, role);
  const notifier = serviceNotifier(logger);
  const listenOf = (o: ForwardCliOptions) => role?.listen ?? o.listen ?? [{ host: '127.0.0.1', port: 9000 }];
  const listen = listenOf(options);
  const { engine, spliceEngine, spliceOff } = commandEngine(options.engine, { threads: options.threads });
  const forwarder = new Forwarder({
    listen,
    listenFd: role ? reusePortListenFd() : undefined,
    to: options.to!,
    engine: options.engine,
    accept: options.accept,
    idleTimeout: idleMs(options.idleTimeout),
    connectTimeout: options.connectTimeout * 1000,
    spliceEngine,
    acceptProxyProtocol: options.acceptProxyProtocol,
    proxyHeaderTimeout: options.proxyHeaderTimeout * 1000,
    sendProxyProtocol: options.sendProxyProtocol,
    logger,
  });
  const metrics = await startMetrics(options, { service: 'forward', activeConnections: () => forwarder.activeConnections, spliceEngine }, logger, role !== undefined);
  if (metrics) forwarder.on('connection', (record) => metrics.connectionEnded({ outcome: record.reason, durationMs: record.durationMs }));
  const bound = await forwarder.listen();
  // Before the startup line: whoever sees it may stop the process at once.
  onStopSignal(logger, options.grace, forwarder, spliceEngine, notifier);
  reloadOnSignal({
    logger,
    notifier,
    read: () => {
      const next = checkForward(read());
      if (usesTransport({ listen: next.listen, to: next.to! })) throw new Error('a tls:// or mux:// --listen or --to takes a restart: this process forwards plain TCP');
      checkTransports({ ...next, to: next.to! });
      return next;
    },
    initial: options,
    // A worker's listeners are its SO_REUSEPORT share of the group's addresses.
    restartOnly: role ? [...FORWARD_RESTART_ONLY, 'listen'] : FORWARD_RESTART_ONLY,
    apply: async (next) => {
      await forwarder.reconfigure({ listen: listenOf(next), to: next.to!, idleTimeout: idleMs(next.idleTimeout), connectTimeout: next.connectTimeout * 1000 });
      logger.level = next.logLevel;
      return { listen: forwarder.addresses().map(formatHostPort) };
    },
  });
  logger.info(
    {
      listen: bound.map(formatHostPort),
      to: formatHostPort(options.to!),
      engine,
      spliceOff,
      accept: forwarder.acceptPath,
      acceptProxyProtocol: options.acceptProxyProtocol || undefined,
      sendProxyProtocol: options.sendProxyProtocol && `v${options.sendProxyProtocol}`,
      exposed: listen.some((address) => !isLoopback(address.host)) || undefined,
      config: options.config,
    },
    'forwarding',
  );
  notifier.ready();
  if (role) workerListening(bound, logger);
}

const FORWARD_RESTART_ONLY = ['engine', 'accept', 'threads', 'workers', 'grace', 'metrics'] as const;

/** --to is required, from the command line or the file. */
function checkForward(options: ForwardCliOptions): ForwardCliOptions {
  if (!options.to) throw new Error("required option '--to <host:port>' not specified (on the command line or as `to` in --config)");
  return options;
}

export function addForwardCommand(program: Command): void {
  const command = program
    .command('forward')
    .description('forward every connection accepted on --listen to --to, both ways, keeping half-close and resets')
    .option(
      '--to <host:port>',
      'upstream to connect each client to (required); tls://: over TLS; mux:// or mux+tls://: a yamux session there (TCP or TLS), a stream per client',
      transportAddressArg(),
    )
    .option(
      '--listen <host:port>',
      'address to accept on, repeatable; IPv6 as [::1]:9000; :PORT means 127.0.0.1 (default: 127.0.0.1:9000); tls:// terminates TLS; mux:// or mux+tls:// accepts yamux sessions, each stream forwarded to --to',
      transportAddressListArg('127.0.0.1', true),
    )
    .addOption(engineOption())
    .addOption(acceptOption('a pair'))
    .addOption(acceptProxyProtocolOption('--proxy-header-timeout', '; served on the node accept path'))
    .option('--proxy-header-timeout <seconds>', 'with --accept-proxy-protocol: close a connection whose PROXY header has not come by then', secondsArg('--proxy-header-timeout'), 10)
    .addOption(sendProxyProtocolOption('; served on the node accept path'))
    .addOption(threadsOption())
    .addOption(idleTimeoutOption('pair'))
    .option('--connect-timeout <seconds>', 'reset the client when the upstream has not accepted by then (with --to mux://: when no session has come up)', secondsArg('--connect-timeout'), 10)
    .addOption(graceOption('pair'))
    .addOption(workersOption())
    .addOption(metricsOption())
    .addOption(new Option('--open', 'allow a --metrics address, or a mux:// or mux+tls:// --listen, beyond loopback'))
    .addOption(logLevelOption())
    .addOption(configOption());
  addTransportOptions(command).action(runForward);
}
