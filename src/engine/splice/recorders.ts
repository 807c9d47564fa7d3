// pcap recording on the splice engine: the recorders (files its writer thread appends to), their
// close and failure events, and a recorded pair's legs as the addon takes them.
import type { NativeConversation, NativeEngine, NativeRecorderEvent } from './native.js';
import { addressBytes } from '../../net/ip.js';
import type { ConversationState, TcpConversation } from '../../pcap/tcp-conversation.js';

/** A pcap file the engine's writer thread appends to: see openNativePcap (src/engine/splice/pcap-sink.ts). */
export interface NativeRecorder {
  readonly id: number;
  /** Queues whole records; false (dropped) when the queue is full or the recorder failed or is closing. */
  write(records: Buffer): boolean;
  /**
   * Resolves once every record queued is in the file and the file is closed, which waits for
   * the pairs recording into it to end or be released. Rejects with the write error that stopped
   * the recorder, or ERR_PCAP_INCOMPLETE when the engine closed before the file took every record.
   */
  close(): Promise<void>;
  /** The write error that stopped the recorder, if one did. */
  readonly error: Error | undefined;
  /** close() was called (or the engine closed). */
  readonly closed: boolean;
}

interface RecorderState {
  id: number;
  onError?: (err: Error) => void;
  error?: Error;
  closeRequested: boolean;
  closed: boolean;
  waiters: { resolve: () => void; reject: (err: Error) => void }[];
}

/**
 * How recorders keep the process alive, as pairs do: `hold()` before one more starts waiting
 * (it reads `closing` before the count goes up), `settled()` after one is done.
 */
export interface KeepAlive {
  hold(): void;
  settled(): void;
}

/** The engine's open recorders, by id. */
export class Recorders {
  readonly #native: NativeEngine;
  readonly #keepAlive: KeepAlive;
  readonly #byId = new Map<number, RecorderState>();
  #closing = 0;

  constructor(native: NativeEngine, keepAlive: KeepAlive) {
    this.#native = native;
    this.#keepAlive = keepAlive;
  }

  /** Recorders whose file the writer has not closed yet. */
  get size(): number {
    return this.#byId.size;
  }

  /** Recorders whose close() waits for the writer. */
  get closing(): number {
    return this.#closing;
  }

  /** See SpliceEngine.openRecorder; the caller has checked `fd`. */
  open(fd: number, onError?: (err: Error) => void): NativeRecorder {
    const id = this.#native.openRecorder(fd);
    const state: RecorderState = { id, onError, closeRequested: false, closed: false, waiters: [] };
    this.#byId.set(id, state);
    const native = this.#native;
    return {
      id,
      write: (records: Buffer) => !state.closeRequested && !state.closed && native.recordWrite(id, records),
      close: () => {
        if (state.closed) return state.error ? Promise.reject(state.error) : Promise.resolve();
        const done = new Promise<void>((resolve, reject) => state.waiters.push({ resolve, reject }));
        if (!state.closeRequested) {
          state.closeRequested = true;
          this.#keepAlive.hold();
          this.#closing++;
          native.closeRecorder(id);
        }
        return done;
      },
      get error() {
        return state.error;
      },
      get closed() {
        return state.closeRequested || state.closed;
      },
    };
  }

  onEvent(event: NativeRecorderEvent): void {
    const state = this.#byId.get(event.recorder);
    if (!state) return;
    if (event.event === 'failed') {
      state.error = Object.assign(new Error(`pcap recording stopped: ${event.syscall ?? 'write'} failed with ${event.code}`), {
        code: event.code,
        errno: event.errno,
        syscall: event.syscall,
      });
      // A throwing handler is raised as uncaught by the addon, after the other events.
      state.onError?.(state.error);
      return;
    }
    this.#byId.delete(event.recorder);
    state.closed = true;
    if (state.closeRequested) this.#closing--;
    const failure = state.error ??
      (event.complete ? undefined : Object.assign(new Error('the engine closed before every record was written to the file'), { code: 'ERR_PCAP_INCOMPLETE' }));
    if (failure && !state.error) state.error = failure;
    for (const waiter of state.waiters.splice(0)) {
      if (failure) waiter.reject(failure);
      else waiter.resolve();
    }
    this.#keepAlive.settled();
  }
}

/** A recorded leg as the addon takes it, with the state it was taken from. */
export function nativeConversation(leg: TcpConversation): { state: ConversationState; native: NativeConversation } {
  const state = leg.state();
  if (state.phase !== 'open') throw new TypeError(`record.legs must be open conversations (handshake written, not reset), got ${state.phase}`);
  const half = (side: 'client' | 'server') => {
    const { address, port, next, acked, ipId, finished } = state[side];
    return { ip: addressBytes(address), port, next, acked, ipId, finished };
  };
  return { state, native: { ipv4: state.ipv4, client: half('client'), server: half('server') } };
}
