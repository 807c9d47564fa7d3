// The tunnel server's native data path (splice engine, no TLS): its listen address and its
// published ports are the addon's acceptors, so a data connection and a public client never
// become a net.Socket. A public client is held (its bytes wait in the kernel); a data connection
// is read only for its preamble and hello; a stream is START written as the head of the
// public → data direction and both fds adopted by the engine. Control connections are released
// to a net.Socket: their frames are JSON, read by ControlChannel.
//
// Who owns each fd: the acceptor from accept() until release(); then the engine (adopt) or
// Node (socketOnFd), which close it.
import fs from 'node:fs';
import type net from 'node:net';
import { Acceptor, nativeAccept } from '../engine/splice/acceptor.js';
import { socketOnFd } from '../engine/splice/results.js';
import type { SpliceEngine } from '../engine/splice/engine.js';
import type { ForwardResult } from '../engine/contract.js';
import type { HostPort } from '../net/host-port.js';
import type { Logger } from '../logger.js';
import type { ResolvedServerOptions } from './options.js';
import type { NativeConn } from './server-context.js';

/** Whether the server's streams take the native data path: throws when 'native' was asked for and cannot be had. */
export function serverNativePath(o: ResolvedServerOptions): boolean {
  if (o.tls) return false;
  // The engine that carries the streams: 'auto' means splice where the addon loads.
  return nativeAccept(o.dataPath, o.engine);
}

/** Acceptor connections as `NativeConn`s, to `onConnection`; `hold`: their bytes are not read. */
export function openNativeListener(address: HostPort, logger: Logger | undefined, onConnection: (conn: NativeConn) => void): Promise<Acceptor> {
  return Acceptor.open([address], {
    hold: true,
    logger,
    onConnection: (id, remoteAddress, remotePort, acceptor) => onConnection({ acceptor, id, remoteAddress, remotePort }),
  });
}

/** The acceptor's address (one listener). */
export function nativeAddress(acceptor: Acceptor): HostPort | undefined {
  return acceptor.addresses()[0];
}

/**
 * A native connection's fd handed to Node (a control or mux connection, or a public client whose
 * stream is a mux stream), with the bytes read past its header put back in front. Throws
 * (ECLOSED) when the connection is gone.
 */
export function nodeSocketOf(conn: NativeConn, rest: Buffer): net.Socket {
  const released = conn.acceptor.release(conn.id);
  if (!released) throw Object.assign(new Error('the connection closed'), { code: 'ECLOSED' });
  const socket = socketOnFd(released.fd);
  socket.setNoDelay(true);
  if (released.unsent) socket.write(released.unsent);
  if (rest.length > 0) socket.unshift(rest);
  return socket;
}

/**
 * An idle data connection, read while it waits in the pool: the client sends nothing there, so
 * a byte is `onBytes`, an end or failure `onGone`. The returned function stops watching (the
 * connection is held again).
 */
export function watchIdle(conn: NativeConn, onBytes: () => void, onGone: () => void): () => void {
  const { acceptor, id } = conn;
  let watching = true;
  const once = (act: () => void) => () => {
    if (!watching) return;
    watching = false;
    act();
  };
  acceptor.attach(id, { data: once(onBytes), eof: once(onGone), failed: once(onGone), drained: once(onGone) });
  acceptor.setHeld(id, false);
  return () => {
    if (!watching) return;
    watching = false;
    acceptor.setHeld(id, true);
  };
}

/**
 * One stream: the public client's and the data connection's fds to the engine, `start` written
 * to the data connection before any byte of the public client's. Rejects (ECONNRESET) when one
 * of them is gone, the other then closed.
 */
export function spliceStream(
  publicConn: NativeConn,
  data: NativeConn,
  start: Buffer,
  engine: SpliceEngine,
  options: { idleTimeout: number; signal: AbortSignal },
): Promise<ForwardResult> {
  const publicEnd = publicConn.acceptor.release(publicConn.id);
  const dataEnd = data.acceptor.release(data.id);
  if (!publicEnd || !dataEnd) {
    if (publicEnd) fs.closeSync(publicEnd.fd);
    if (dataEnd) fs.closeSync(dataEnd.fd);
    return Promise.reject(Object.assign(new Error('a connection of the stream closed before it started'), { code: 'ECONNRESET' }));
  }
  // Nothing was written to either by the acceptor after the hello was read: no unsent bytes.
  return new Promise((resolve) => {
    // The engine counts START among the bytes a → b; the record counts the public client's only.
    engine.adoptThen(publicEnd.fd, dataEnd.fd, start, null, options, (result) => {
      result.bytesAtoB = Math.max(0, result.bytesAtoB - start.length);
      resolve(result);
    });
  });
}
