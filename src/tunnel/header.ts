// Reads one header off a socket through a pure incremental parser, and leaves every byte after
// it in the socket's read buffer (unshifted, socket paused), so forward() sends them first.
import type net from 'node:net';
import { onAbort as listenAbort } from '../net/abort.js';
import type { ProtocolError } from '../protocol/reader.js';

const EMPTY = Buffer.alloc(0);
function ignore(): void {}

/** The socket ended, failed, timed out or was aborted before a whole header arrived. */
export class HeaderError extends Error {
  constructor(
    readonly code: 'ECLOSED' | 'ETIMEDOUT' | 'EOVERSIZE' | 'ABORT_ERR' | string,
    message: string,
  ) {
    super(message);
    this.name = 'HeaderError';
  }
}

export interface ReadHeaderOptions {
  timeoutMs?: number;
  signal?: AbortSignal;
  /** Bytes buffered without a whole header before giving up (default 4 KiB). */
  maxBytes?: number;
}

/**
 * One step of reading a header, pure: the bytes so far with `chunk` added, parsed. Undefined while
 * no whole header is there; throws EOVERSIZE past `maxBytes`. `consumed`: the header's length (all
 * of `buffered` for a protocol error, which ends the connection).
 */
export function headerStep<R extends { status: 'ok'; consumed: number } | ProtocolError>(
  buffered: Buffer,
  parse: (buf: Buffer) => R | { status: 'incomplete' },
  maxBytes: number,
): { header: R; consumed: number } | undefined {
  const result = parse(buffered);
  if (result.status === 'incomplete') {
    if (buffered.length > maxBytes) throw new HeaderError('EOVERSIZE', `no whole header in ${buffered.length} bytes`);
    return undefined;
  }
  return { header: result as R, consumed: result.status === 'ok' ? (result as { consumed: number }).consumed : buffered.length };
}

/**
 * Resolves with the parsed header (or the parser's protocol error, for the caller to answer). The
 * socket is left paused with the bytes after the header unshifted; an 'error' listener stays on it
 * so that nothing goes unhandled before the caller takes it over.
 */
export function readHeader<R extends { status: 'ok'; consumed: number } | ProtocolError>(
  socket: net.Socket,
  parse: (buf: Buffer) => R | { status: 'incomplete' },
  options: ReadHeaderOptions = {},
): Promise<R> {
  const maxBytes = options.maxBytes ?? 4096;
  return new Promise((resolve, reject) => {
    let buffered: Buffer = EMPTY;
    let timer: NodeJS.Timeout | undefined;
    let detach: (() => void) | undefined;
    const done = () => {
      clearTimeout(timer);
      socket.off('data', onData);
      socket.off('end', onEnd);
      socket.off('close', onEnd);
      socket.off('error', onError);
      detach?.();
      socket.on('error', ignore);
      socket.pause();
    };
    const fail = (err: HeaderError) => {
      done();
      reject(err);
    };
    const onData = (chunk: Buffer) => {
      buffered = buffered.length === 0 ? chunk : Buffer.concat([buffered, chunk]);
      let step;
      try {
        step = headerStep(buffered, parse, maxBytes);
      } catch (err) {
        return fail(err as HeaderError);
      }
      if (!step) return;
      done();
      if (step.consumed < buffered.length) socket.unshift(buffered.subarray(step.consumed));
      resolve(step.header);
    };
    const onEnd = () => fail(new HeaderError('ECLOSED', `the connection closed after ${buffered.length} bytes of a header`));
    const onError = (err: NodeJS.ErrnoException) => fail(new HeaderError(err.code ?? 'EIO', err.message));
    const onAbort = () => fail(new HeaderError('ABORT_ERR', 'aborted'));
    if (options.signal?.aborted) return onAbort();
    socket.on('data', onData);
    socket.on('end', onEnd);
    socket.on('close', onEnd);
    socket.on('error', onError);
    detach = options.signal ? listenAbort(options.signal, onAbort) : undefined;
    if (options.timeoutMs) timer = setTimeout(() => fail(new HeaderError('ETIMEDOUT', `no header within ${options.timeoutMs} ms`)), options.timeoutMs);
    socket.resume();
  });
}
