// `splicer forward`: forward every connection on --listen to one upstream.
import { Command } from 'commander';
import { acceptOption, commandEngine, engineOption, logLevelOption, onStopSignal, secondsArg, idleMs, threadsOption, idleTimeoutOption, graceOption } from './flags.js';
import { formatHostPort, isLoopback } from '../net/host-port.js';
import { Forwarder } from '../forwarder/server.js';
import type { LOG_LEVELS } from '../logger.js';
import { commandLogger, reusePortListenFd, superviseWorkers, workerListening, workerRole, workersOption, workersUnavailable } from './workers.js';
import type { EngineChoice } from '../engine/contract.js';
import type { AcceptPath } from '../engine/splice/acceptor.js';
import { addMuxOptions, muxAddressArg, muxAddressListArg, runMuxForward, usesMux, type MaybeMuxAddress } from './forward-mux.js';

interface ForwardCliOptions {
  listen?: MaybeMuxAddress[];
  to: MaybeMuxAddress;
  muxWindow: number;
  muxMaxStreams: number;
  muxKeepalive: number;
  engine: EngineChoice;
  accept: AcceptPath;
  threads: number;
  idleTimeout: number;
  connectTimeout: number;
  grace: number;
  workers: number;
  logLevel: (typeof LOG_LEVELS)[number];
}

async function runForward(options: ForwardCliOptions): Promise<void> {
  if (usesMux(options)) return runMuxForward(options);
  const role = workerRole();
  if (options.workers > 1 && !role) {
    const unavailable = workersUnavailable();
    if (unavailable) throw new Error(unavailable);
    return superviseWorkers({ workers: options.workers, grace: options.grace, logLevel: options.logLevel });
  }
  const logger = commandLogger(options.logLevel, role);
  const listen = role?.listen ?? options.listen ?? [{ host: '127.0.0.1', port: 9000 }];
  const { engine, spliceEngine, spliceOff } = commandEngine(options.engine, { threads: options.threads });
  const forwarder = new Forwarder({
    listen,
    listenFd: role ? reusePortListenFd() : undefined,
    to: options.to,
    engine: options.engine,
    accept: options.accept,
    idleTimeout: idleMs(options.idleTimeout),
    connectTimeout: options.connectTimeout * 1000,
    spliceEngine,
    logger,
  });
  const bound = await forwarder.listen();
  // Before the startup line: whoever sees it may stop the process at once.
  onStopSignal(logger, options.grace, forwarder, spliceEngine);
  logger.info(
    {
      listen: bound.map(formatHostPort),
      to: formatHostPort(options.to),
      engine,
      spliceOff,
      accept: forwarder.acceptPath,
      exposed: listen.some((address) => !isLoopback(address.host)) || undefined,
    },
    'forwarding',
  );
  if (role) workerListening(bound, logger);
}

export function addForwardCommand(program: Command): void {
  const command = program
    .command('forward')
    .description('forward every connection accepted on --listen to --to, both ways, keeping half-close and resets')
    .requiredOption('--to <host:port>', 'upstream to connect each client to; mux://HOST:PORT: one yamux session there, a stream per client', muxAddressArg())
    .option(
      '--listen <host:port>',
      'address to accept on, repeatable; IPv6 as [::1]:9000; :PORT means 127.0.0.1 (default: 127.0.0.1:9000); mux://HOST:PORT accepts yamux sessions, each stream forwarded to --to',
      muxAddressListArg('127.0.0.1', true),
    )
    .addOption(engineOption())
    .addOption(acceptOption('a pair'))
    .addOption(threadsOption())
    .addOption(idleTimeoutOption('pair'))
    .option('--connect-timeout <seconds>', 'reset the client when the upstream has not accepted by then', secondsArg('--connect-timeout'), 10)
    .addOption(graceOption('pair'))
    .addOption(workersOption())
    .addOption(logLevelOption());
  addMuxOptions(command).action(runForward);
}
