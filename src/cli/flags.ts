// Argument parsers and options shared by the `splicer` subcommands.
import { InvalidArgumentError, Option } from 'commander';
import { AddressError, parseHostPort, type HostPort } from '../net/host-port.js';
import { engines } from '../engine/forward.js';
import { flushLogs, LOG_LEVELS, type Logger } from '../logger.js';
import { SpliceEngine, type SpliceEngineOptions } from '../engine/splice/engine.js';
import { MAX_IDLE_TIMEOUT_MS, type EngineChoice, type EngineName } from '../engine/contract.js';

export function hostPortArg(defaultHost?: string, allowZero = false) {
  return (value: string): HostPort => {
    try {
      return parseHostPort(value, { defaultHost, allowZero });
    } catch (err) {
      if (err instanceof AddressError) throw new InvalidArgumentError(err.message);
      throw err;
    }
  };
}

export function hostPortListArg(defaultHost?: string, allowZero = false) {
  const parse = hostPortArg(defaultHost, allowZero);
  return (value: string, previous: HostPort[] | undefined): HostPort[] => [...(previous ?? []), parse(value)];
}

export function integerArg(name: string, min: number, max: number) {
  return (value: string) => {
    if (!/^\d+$/.test(value.trim())) throw new InvalidArgumentError(`${name} must be a whole number, got "${value}"`);
    const number = Number(value);
    if (number < min || number > max) throw new InvalidArgumentError(`${name} must be from ${min} to ${max}, got ${number}`);
    return number;
  };
}

export function secondsArg(name: string, maxSeconds = Infinity) {
  return (value: string) => {
    const number = Number(value);
    if (value.trim() === '' || !Number.isFinite(number) || number < 0) {
      throw new InvalidArgumentError(`${name} must be a number of seconds >= 0, got "${value}"`);
    }
    if (number > maxSeconds) throw new InvalidArgumentError(`${name} must be at most ${maxSeconds} seconds, got "${value}"`);
    return number;
  };
}

/** --idle-timeout: forward() takes whole ms up to MAX_IDLE_TIMEOUT_MS; the caller rounds (idleMs). */
export const idleSecondsArg = (name: string) => secondsArg(name, Math.floor(MAX_IDLE_TIMEOUT_MS / 1000));
export const idleMs = (seconds: number) => Math.round(seconds * 1000);

export const engineOption = () =>
  new Option('--engine <engine>', 'auto: splice where the addon and the sockets allow it, else js').choices(['auto', 'splice', 'js']).default('auto');

/** The engine a command runs on, decided once at startup. */
export interface CommandEngine {
  /** What its connections get: `splice` where the addon loaded (and the sockets allow it), else `js`. */
  engine: EngineName;
  /** The engine's own splice engine, to close at exit; none on the JS engine. */
  spliceEngine?: SpliceEngine;
  /** Why splice is off, when it is. */
  spliceOff?: string;
}

/**
 * `--engine` resolved at startup: `splice` where it cannot be had is an error here, with the reason,
 * never a failure per connection; `auto` without the addon runs on the JS engine and says why.
 * `jsOnly` names a reason this command's connections can only be carried in JS (TLS).
 */
export function commandEngine(choice: EngineChoice, options: SpliceEngineOptions = {}, jsOnly?: string): CommandEngine {
  const unavailable = engines().splice.reason;
  if (choice === 'splice' && unavailable) throw new Error(`--engine splice: the splice engine is not available here (${unavailable}); use --engine auto or js`);
  if (choice === 'splice' && jsOnly) throw new Error(`--engine splice: ${jsOnly}; use --engine auto`);
  const spliceOff = choice === 'js' ? '--engine js' : (unavailable ?? jsOnly);
  if (spliceOff) return { engine: 'js', spliceOff };
  return { engine: 'splice', spliceEngine: new SpliceEngine(options) };
}

/** --accept: who accepts a service's connections (the addon's native path, or net.Server). */
export const acceptOption = (what: string) =>
  new Option(
    '--accept <path>',
    `who accepts the connections: native (the addon: no Node socket for ${what}; Linux, splice engine), ` +
      'node (net.Server), auto (native where it can be)',
  )
    .choices(['auto', 'native', 'node'])
    .default('auto');

export const threadsOption = () =>
  new Option('--threads <n>', 'splice engine loop threads; 0 runs the loop on the main thread (no thread switch per connection: cheapest for short connections)')
    .argParser(integerArg('--threads', 0, 64))
    .default(1);

/** `what`: what a command's connections are called in its help (pairs, connections, streams). */
export const idleTimeoutOption = (what: string, seconds = 0) =>
  new Option('--idle-timeout <seconds>', `close a ${what} after this long with no byte either way; 0 = never`).argParser(idleSecondsArg('--idle-timeout')).default(seconds);

export const graceOption = (what: string) =>
  new Option('--grace <seconds>', `on SIGINT/SIGTERM, time given to open ${what}s before they are ended`).argParser(secondsArg('--grace')).default(5);

export const logLevelOption = () => new Option('--log-level <level>', 'log level of the JSON lines on stdout').choices(LOG_LEVELS).default('info');

export const collect = (value: string, previous: string[] | undefined) => [...(previous ?? []), value];

/** What a command runs: a service whose close(graceMs) gives open connections that long. */
export interface Stoppable {
  readonly activeConnections: number;
  close(graceMs: number): Promise<void>;
}

/**
 * Ends the process by `signal`'s default action. For when its last log lines cannot be written (a
 * stalled reader holds a write of theirs in Node's thread pool, which a normal exit would wait
 * for, for ever): service managers count a stop by SIGTERM or SIGINT as clean.
 */
export function exitBySignal(signal: string): never {
  process.removeAllListeners(signal);
  process.kill(process.pid, signal as NodeJS.Signals);
  // The signal is delivered at once; this only keeps the type checker sure nothing follows.
  return process.exit(1);
}

/**
 * On SIGINT/SIGTERM: log, close the service with `grace` seconds for its connections, close the
 * engine, exit 0. `notifier` hears that the stop has begun (systemd's STOPPING=1).
 */
export function onStopSignal(logger: Logger, grace: number, service: Stoppable, spliceEngine: SpliceEngine | undefined, notifier?: { stopping(): void }): void {
  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    notifier?.stopping();
    logger.info({ signal, active: service.activeConnections, graceSeconds: grace }, 'stopping');
    await service.close(grace * 1000);
    await spliceEngine?.close();
    logger.info('stopped');
    if (await flushLogs(logger)) process.exit(0);
    exitBySignal(signal);
  };
  process.on('SIGINT', () => void stop('SIGINT'));
  process.on('SIGTERM', () => void stop('SIGTERM'));
}
