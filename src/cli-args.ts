// Argument parsers and options shared by the `splicer` subcommands.
import { InvalidArgumentError, Option } from 'commander';
import { AddressError, parseHostPort, type HostPort } from './address.js';
import { LOG_LEVELS, type Logger } from './logger.js';
import { MAX_IDLE_TIMEOUT_MS } from './types.js';

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
export const logLevelOption = () => new Option('--log-level <level>', 'log level of the JSON lines on stdout').choices(LOG_LEVELS).default('info');


export const collect = (value: string, previous: string[] | undefined) => [...(previous ?? []), value];

/** On SIGINT/SIGTERM: log, give open connections `grace` seconds through stopAll, then exit 0. */
export function onStopSignal(logger: Logger, grace: number, active: () => number, stopAll: () => Promise<void>): void {
  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal, active: active(), graceSeconds: grace }, 'stopping');
    await stopAll();
    logger.info('stopped');
    logger.flush?.();
    process.exit(0);
  };
  process.on('SIGINT', () => void stop('SIGINT'));
  process.on('SIGTERM', () => void stop('SIGTERM'));
}
