import { pino, type Logger, type LevelWithSilent, type DestinationStream } from 'pino';
import { LogDestination } from './log-destination.js';

export type { Logger };
export { LogDestination };

export const LOG_LEVELS: readonly LevelWithSilent[] = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];

export interface LoggerOptions {
  /** Fields on every line (a worker process's `worker: index`). */
  base?: Record<string, unknown>;
  /** Where the lines go; default stdout (fd 1), asynchronously and bounded (LogDestination). */
  destination?: DestinationStream;
}

/** JSON lines on stdout, one object per event. */
export function createLogger(level: LevelWithSilent = 'info', options: LoggerOptions = {}): Logger {
  const config = { level, base: options.base, timestamp: pino.stdTimeFunctions.isoTime };
  return pino(config, options.destination ?? new LogDestination(1));
}

/**
 * Resolves once the logger's lines are written, or after `ms` when its reader has stalled: a
 * process that is stopping waits for its last lines that long and no longer.
 */
export function flushLogs(logger: Logger, ms = 1000): Promise<boolean> {
  const stream = (logger as unknown as Record<symbol, unknown>)[pino.symbols.streamSym];
  if (stream instanceof LogDestination) return stream.flushWithin(ms);
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(false), ms);
    timer.unref();
    try {
      logger.flush(() => {
        clearTimeout(timer);
        resolve(true);
      });
    } catch {
      clearTimeout(timer);
      resolve(false);
    }
  });
}
