// readHeader() for a connection of the addon's (Acceptor): reads one header through a pure
// incremental parser, then holds the connection again, so the bytes after the header are either
// in the `rest` returned or still in the kernel, for the splice engine to carry.
import type { Acceptor } from '../engine/splice/acceptor.js';
import { onAbort as listenAbort } from '../net/abort.js';
import type { ProtocolError } from '../protocol/reader.js';
import { HeaderError, headerStep, type ReadHeaderOptions } from './header.js';

const EMPTY = Buffer.alloc(0);

/**
 * Resolves with the parsed header and the bytes read past it. The connection stays the caller's
 * in the acceptor, held; on a rejection it has been destroyed.
 */
export function readNativeHeader<R extends { status: 'ok'; consumed: number } | ProtocolError>(
  acceptor: Acceptor,
  id: number,
  parse: (buf: Buffer) => R | { status: 'incomplete' },
  options: ReadHeaderOptions = {},
): Promise<{ header: R; rest: Buffer }> {
  const maxBytes = options.maxBytes ?? 4096;
  return new Promise((resolve, reject) => {
    let buffered: Buffer = EMPTY;
    let timer: NodeJS.Timeout | undefined;
    let detach: (() => void) | undefined;
    let settled = false;
    const done = () => {
      settled = true;
      clearTimeout(timer);
      detach?.();
    };
    const fail = (err: HeaderError, destroy = true) => {
      if (settled) return;
      done();
      if (destroy) acceptor.destroy(id);
      reject(err);
    };
    const closed = () => fail(new HeaderError('ECLOSED', `the connection closed after ${buffered.length} bytes of a header`));
    acceptor.attach(id, {
      data(chunk) {
        if (settled) return;
        buffered = buffered.length === 0 ? chunk : Buffer.concat([buffered, chunk]);
        let step;
        try {
          step = headerStep(buffered, parse, maxBytes);
        } catch (err) {
          return fail(err as HeaderError);
        }
        if (!step) return;
        done();
        acceptor.setHeld(id, true);
        resolve({ header: step.header, rest: buffered.subarray(step.consumed) });
      },
      eof: closed,
      failed: (code) => fail(new HeaderError(code, `the connection failed (${code}) after ${buffered.length} bytes of a header`), false),
      drained: closed,
    });
    if (options.signal?.aborted) return fail(new HeaderError('ABORT_ERR', 'aborted'));
    detach = options.signal ? listenAbort(options.signal, () => fail(new HeaderError('ABORT_ERR', 'aborted'))) : undefined;
    if (options.timeoutMs) timer = setTimeout(() => fail(new HeaderError('ETIMEDOUT', `no header within ${options.timeoutMs} ms`)), options.timeoutMs);
    acceptor.setHeld(id, false);
  });
}
