// `splicer forward`: forward every connection on --listen to one upstream.
import { Command } from 'commander';
import { commandEngine, engineOption, hostPortArg, hostPortListArg, logLevelOption, onStopSignal, secondsArg, idleMs, threadsOption, idleTimeoutOption, graceOption } from './flags.js';
import { formatHostPort, isLoopback, type HostPort } from '../net/host-port.js';
import { Forwarder } from '../forwarder/server.js';
import { createLogger, type LOG_LEVELS } from '../logger.js';
import type { EngineChoice } from '../engine/contract.js';

interface ForwardCliOptions {
  listen?: HostPort[];
  to: HostPort;
  engine: EngineChoice;
  threads: number;
  idleTimeout: number;
  connectTimeout: number;
  grace: number;
  logLevel: (typeof LOG_LEVELS)[number];
}

async function runForward(options: ForwardCliOptions): Promise<void> {
  const logger = createLogger(options.logLevel);
  const listen = options.listen ?? [{ host: '127.0.0.1', port: 9000 }];
  const { engine, spliceEngine, spliceOff } = commandEngine(options.engine, { threads: options.threads });
  const forwarder = new Forwarder({
    listen,
    to: options.to,
    engine: options.engine,
    idleTimeout: idleMs(options.idleTimeout),
    connectTimeout: options.connectTimeout * 1000,
    spliceEngine,
    logger,
  });
  const bound = await forwarder.listen();
  logger.info(
    {
      listen: bound.map(formatHostPort),
      to: formatHostPort(options.to),
      engine,
      spliceOff,
      exposed: listen.some((address) => !isLoopback(address.host)) || undefined,
    },
    'forwarding',
  );
  onStopSignal(logger, options.grace, forwarder, spliceEngine);
}

export function addForwardCommand(program: Command): void {
  program
    .command('forward')
    .description('forward every connection accepted on --listen to --to, both ways, keeping half-close and resets')
    .requiredOption('--to <host:port>', 'upstream to connect each client to', hostPortArg())
    .option('--listen <host:port>', 'address to accept on, repeatable; IPv6 as [::1]:9000; :PORT means 127.0.0.1 (default: 127.0.0.1:9000)', hostPortListArg('127.0.0.1', true))
    .addOption(engineOption())
    .addOption(threadsOption())
    .addOption(idleTimeoutOption('pair'))
    .option('--connect-timeout <seconds>', 'reset the client when the upstream has not accepted by then', secondsArg('--connect-timeout'), 10)
    .addOption(graceOption('pair'))
    .addOption(logLevelOption())
    .action(runForward);
}
