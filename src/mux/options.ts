// A mux session's options, checked with zod: the defaults of the issue (#13), errors naming the option.
import { z } from 'zod';
import { INITIAL_WINDOW } from './frame.js';
import { MuxError } from './errors.js';

export const MUX_DEFAULTS = {
  maxStreams: 1024,
  maxWindow: 4 * 1024 * 1024,
  keepaliveInterval: 15_000,
  keepaliveTimeout: 10_000,
} as const;

/** The largest window a session may grant: a Data frame's length is checked against it, and 1 GiB keeps every sum within a uint32. */
export const MAX_WINDOW_LIMIT = 1024 * 1024 * 1024;

const schema = z.object({
  role: z.enum(['client', 'server']),
  maxStreams: z.number().int().min(1).max(1 << 20).default(MUX_DEFAULTS.maxStreams),
  maxWindow: z.number().int().min(INITIAL_WINDOW).max(MAX_WINDOW_LIMIT).default(MUX_DEFAULTS.maxWindow),
  keepaliveInterval: z.number().int().min(0).max(24 * 3600_000).default(MUX_DEFAULTS.keepaliveInterval),
  keepaliveTimeout: z.number().int().min(1).max(3600_000).default(MUX_DEFAULTS.keepaliveTimeout),
});

export interface MuxSessionOptions {
  /** 'client' on the side that dialled the connection (odd stream ids), 'server' on the side that accepted it (even ids). */
  role: 'client' | 'server';
  /** Streams open at once, both directions together; an incoming one past it gets RST. Default 1024. */
  maxStreams?: number;
  /** Largest receive window a stream grows to, in bytes (256 KiB … 1 GiB). Default 4 MiB. */
  maxWindow?: number;
  /** Ms between keepalive pings; 0 turns them off. Default 15 000. */
  keepaliveInterval?: number;
  /** Ms a ping may wait for its answer before the session fails. Default 10 000. */
  keepaliveTimeout?: number;
}

export type ResolvedMuxOptions = Required<MuxSessionOptions>;

export function parseMuxOptions(input: MuxSessionOptions): ResolvedMuxOptions {
  const result = schema.strict().safeParse(input);
  if (result.success) return result.data;
  const issue = result.error.issues[0];
  const where = issue.path.length ? issue.path.join('.') : 'options';
  throw new MuxError('ERR_MUX_OPTIONS', `mux session option ${where}: ${issue.message}`);
}
