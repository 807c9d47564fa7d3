// The addon's MuxSession class as JS sees it (native/addon_mux.cc), and whether it is here.
import { loadNative } from '../engine/splice/native.js';

export interface SplicedSessionCounts {
  streams: number;
  /** Data frames received and sent. */
  dataFramesIn: number;
  dataFramesOut: number;
  /** The largest receive window a stream of this session was granted (bytes). */
  largestWindow: number;
  /** Payload bytes received through user space (the overflow of a stream whose pipe was full), not spliced. */
  overflowBytes: number;
}

export interface NativeMuxSession {
  open(fd: number, head: Buffer | null): number | string;
  attach(id: number, fd: number, head: Buffer | null): boolean;
  abort(id: number): void;
  ping(): number;
  goAway(): void;
  destroy(code?: string, message?: string): void;
  counts(): SplicedSessionCounts & { reads: number };
}

export type NativeMuxSessionClass = new (
  fd: number,
  head: Buffer | null,
  options: { client: boolean; maxStreams: number; maxWindow: number; maxPipeSize?: number },
  onEvent: (kind: number, a: number | string, b?: number | string, c?: number, d?: number, e?: number) => void,
) => NativeMuxSession;

/** The kinds of its events (onEvent's first argument). */
export const EVENT = { opened: 1, streamClosed: 2, goaway: 3, pong: 4, closed: 5 } as const;

export function nativeClass(): NativeMuxSessionClass | undefined {
  const binding = loadNative().binding as unknown as { MuxSession?: NativeMuxSessionClass } | null;
  return binding?.MuxSession;
}

/** Why spliced mux sessions cannot run here, or undefined when they can. */
export function splicedMuxUnavailable(): string | undefined {
  const load = loadNative();
  if (!load.binding) return `the splice engine is not available: ${load.reason}`;
  if (!nativeClass()) return 'the native addon has no MuxSession (rebuild it)';
  return undefined;
}

