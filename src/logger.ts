import { pino, type Logger, type LevelWithSilent, type DestinationStream } from 'pino';

export type { Logger };

export const LOG_LEVELS: readonly LevelWithSilent[] = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];

export interface LoggerOptions {
  /** Fields on every line (a worker process's `worker: index`). */
  base?: Record<string, unknown>;
  /** Where the lines go; default stdout (fd 1). */
  destination?: DestinationStream;
}

/** JSON lines on stdout, one object per event. */
export function createLogger(level: LevelWithSilent = 'info', options: LoggerOptions = {}): Logger {
  const config = { level, base: options.base, timestamp: pino.stdTimeFunctions.isoTime };
  return options.destination ? pino(config, options.destination) : pino(config);
}
