#!/usr/bin/env node
// The `splicer` command line.
import { Command, InvalidArgumentError, Option } from 'commander';
import { createRequire } from 'node:module';
import { AddressError, formatHostPort, isLoopback, parseHostPort, type HostPort } from './address.js';
import { engines } from './forward.js';
import { Forwarder } from './forwarder.js';
import { createLogger, LOG_LEVELS } from './logger.js';
import { SpliceEngine } from './splice-engine.js';
import type { EngineChoice } from './types.js';

const version = (createRequire(import.meta.url)('../package.json') as { version: string }).version;

function hostPortArg(defaultHost?: string, allowZero = false) {
  return (value: string): HostPort => {
    try {
      return parseHostPort(value, { defaultHost, allowZero });
    } catch (err) {
      if (err instanceof AddressError) throw new InvalidArgumentError(err.message);
      throw err;
    }
  };
}

function hostPortListArg(defaultHost?: string, allowZero = false) {
  const parse = hostPortArg(defaultHost, allowZero);
  return (value: string, previous: HostPort[] | undefined): HostPort[] => [...(previous ?? []), parse(value)];
}

function integerArg(name: string, min: number, max: number) {
  return (value: string) => {
    if (!/^\d+$/.test(value.trim())) throw new InvalidArgumentError(`${name} must be a whole number, got "${value}"`);
    const number = Number(value);
    if (number < min || number > max) throw new InvalidArgumentError(`${name} must be from ${min} to ${max}, got ${number}`);
    return number;
  };
}

function secondsArg(name: string) {
  return (value: string) => {
    const number = Number(value);
    if (value.trim() === '' || !Number.isFinite(number) || number < 0) {
      throw new InvalidArgumentError(`${name} must be a number of seconds >= 0, got "${value}"`);
    }
    return number;
  };
}

const engineOption = () =>
  new Option('--engine <engine>', 'auto: splice where the addon and the sockets allow it, else js').choices(['auto', 'splice', 'js']).default('auto');
const logLevelOption = () => new Option('--log-level <level>', 'log level of the JSON lines on stdout').choices(LOG_LEVELS).default('info');

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
  const available = engines();
  if (options.engine === 'splice' && !available.splice.available) {
    throw new Error(`--engine splice: ${available.splice.reason}`);
  }
  const spliceEngine = available.splice.available && options.engine !== 'js' ? new SpliceEngine({ threads: options.threads }) : undefined;
  const forwarder = new Forwarder({
    listen,
    to: options.to,
    engine: options.engine,
    idleTimeout: options.idleTimeout * 1000,
    connectTimeout: options.connectTimeout * 1000,
    spliceEngine,
    logger,
  });
  const bound = await forwarder.listen();
  logger.info(
    {
      listen: bound.map(formatHostPort),
      to: formatHostPort(options.to),
      engine: options.engine,
      splice: available.splice.available ? 'available' : available.splice.reason,
      exposed: listen.some((address) => !isLoopback(address.host)) || undefined,
    },
    'forwarding',
  );
  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal, active: forwarder.activeConnections, graceSeconds: options.grace }, 'stopping');
    await forwarder.close(options.grace * 1000);
    await spliceEngine?.close();
    logger.info('stopped');
    logger.flush?.();
    process.exit(0);
  };
  process.on('SIGINT', () => void stop('SIGINT'));
  process.on('SIGTERM', () => void stop('SIGTERM'));
}

export function buildProgram(): Command {
  const program = new Command('splicer')
    .description('Forward TCP connections with Linux splice() zero copy')
    .version(version)
    .showHelpAfterError('(run with --help for usage)');

  program
    .command('forward')
    .description('forward every connection accepted on --listen to --to, both ways, keeping half-close and resets')
    .requiredOption('--to <host:port>', 'upstream to connect each client to', hostPortArg())
    .option('--listen <host:port>', 'address to accept on, repeatable; IPv6 as [::1]:9000; :PORT means 127.0.0.1 (default: 127.0.0.1:9000)', hostPortListArg('127.0.0.1', true))
    .addOption(engineOption())
    .option('--threads <n>', 'splice engine loop threads', integerArg('--threads', 1, 64), 1)
    .option('--idle-timeout <seconds>', 'close a pair after this long with no byte either way; 0 = never', secondsArg('--idle-timeout'), 0)
    .option('--connect-timeout <seconds>', 'reset the client when the upstream has not accepted by then', secondsArg('--connect-timeout'), 10)
    .option('--grace <seconds>', 'on SIGINT/SIGTERM, time given to open pairs before they are ended', secondsArg('--grace'), 5)
    .addOption(logLevelOption())
    .action(runForward);

  program
    .command('engines')
    .description('say which forwarding engines this machine can use, and why not')
    .action(() => {
      console.log(JSON.stringify(engines(), null, 2));
    });

  return program;
}

buildProgram()
  .parseAsync(process.argv)
  .catch((err: Error) => {
    console.error(`splicer: ${err.message}`);
    process.exit(1);
  });
