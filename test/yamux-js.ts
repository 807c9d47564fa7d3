// npm's yamux-js as a peer in this process: its session types (it ships CommonJS without types)
// and the framing its parser needs.
import { createRequire } from 'node:module';
import type net from 'node:net';
import { Transform, type Duplex, type TransformCallback } from 'node:stream';

const require = createRequire(import.meta.url);
// yamux-js ships CommonJS without types.
export const yamuxJs = require('yamux-js') as {
  Client: new (config?: object) => YamuxJsSession;
  Server: new (onStream: (s: Duplex & { close(): void }) => void, config?: object) => YamuxJsSession;
};
export interface YamuxJsSession extends Duplex {
  open(): Duplex & { close(): void };
}
export const YAMUX_JS_CONFIG = { enableKeepAlive: false, logger: () => {} };

/**
 * yamux-js's parser assumes each chunk it is given holds whole frames (a frame split across TCP
 * reads is dropped); this hands it one whole frame per chunk, as its own tests do.
 */
class WholeFrames extends Transform {
  private buffered: Buffer = Buffer.alloc(0);
  override _transform(chunk: Buffer, _e: BufferEncoding, done: TransformCallback): void {
    this.buffered = this.buffered.length ? Buffer.concat([this.buffered, chunk]) : chunk;
    for (;;) {
      if (this.buffered.length < 12) break;
      const payload = this.buffered[1] === 0 ? this.buffered.readUInt32BE(8) : 0;
      if (this.buffered.length < 12 + payload) break;
      this.push(this.buffered.subarray(0, 12 + payload));
      this.buffered = this.buffered.subarray(12 + payload);
    }
    done();
  }
}

export function attachYamuxJs(socket: net.Socket, session: YamuxJsSession): void {
  socket.pipe(new WholeFrames()).pipe(session).pipe(socket);
  session.on('error', () => {});
}
