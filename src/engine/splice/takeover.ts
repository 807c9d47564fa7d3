// The one place that reaches into a Node socket's handle. `_handle.fd` and
// `_handle.readStop()` are undocumented but stable (nodejs/node#8974); every
// use is feature-checked so an unexpected handle means "no fd", not a crash.
import net from 'node:net';
import tls from 'node:tls';
import type { Duplex } from 'node:stream';
import { loadNative } from './native.js';

interface StreamHandle {
  fd?: unknown;
  readStop?: () => number;
  readStart?: () => number;
  /** Node's own note of whether it started the handle reading (net.Socket._read looks at it). */
  reading?: boolean;
}

function handleOf(stream: Duplex): StreamHandle | null {
  const handle = (stream as unknown as { _handle?: StreamHandle | null })._handle;
  return handle ?? null;
}

/** The socket's fd, or null when it has none the splice engine can use (TLS, pipes, any Duplex). */
export function socketFd(stream: Duplex): number | null {
  if (!(stream instanceof net.Socket) || stream instanceof tls.TLSSocket) return null;
  if (stream.destroyed) return null;
  const handle = handleOf(stream);
  if (!handle || typeof handle.readStop !== 'function') return null;
  const fd = handle.fd;
  return typeof fd === 'number' && Number.isInteger(fd) && fd >= 0 ? fd : null;
}

/** Why a stream cannot go to the splice engine, or null when it can. */
export function whyNoFd(stream: Duplex): string | null {
  if (stream instanceof tls.TLSSocket) return 'a TLS socket has no plain fd';
  if (!(stream instanceof net.Socket)) return 'not a net.Socket';
  if (stream.destroyed) return 'the socket is destroyed';
  // A connecting socket gets its handle (and fd) once the address is looked up.
  if (stream.connecting) return null;
  return socketFd(stream) === null ? 'the socket has no fd' : null;
}

/** Whether settle() has anything to wait for. */
export function unsettled(socket: net.Socket): boolean {
  return socket.connecting || (socket.writableLength > 0 && !socket.destroyed);
}

/** Resolves once the socket is connected and every byte written to it has reached the kernel. */
export async function settle(socket: net.Socket): Promise<void> {
  if (socket.connecting) {
    await new Promise<void>((resolve, reject) => {
      const onConnect = () => { socket.off('error', onError); resolve(); };
      const onError = (err: Error) => { socket.off('connect', onConnect); reject(err); };
      socket.once('connect', onConnect);
      socket.once('error', onError);
    });
  }
  if (socket.writableLength > 0 && !socket.destroyed) {
    // A zero-length write completes after every write queued before it.
    await new Promise<void>((resolve) => socket.write(Buffer.alloc(0), () => resolve()));
  }
}

/**
 * Stops Node from reading the socket and returns what it had already read.
 * `pause()` does not stop libuv reading, so the handle is stopped directly; the
 * stream's own `_handle.reading` flag stays set, so draining with `read()` does
 * not start it again. Must run synchronously with the dup that follows.
 */
export function takeReadable(socket: net.Socket): Buffer | null {
  socket.pause();
  handleOf(socket)?.readStop?.();
  const chunks: Buffer[] = [];
  let chunk: Buffer | null;
  while ((chunk = socket.read() as Buffer | null) !== null) chunks.push(chunk);
  handleOf(socket)?.readStop?.();
  if (chunks.length === 0) return null;
  return chunks.length === 1 ? chunks[0] : Buffer.concat(chunks);
}

/**
 * Undoes takeReadable() for a socket the engine did not take after all: the bytes go back in
 * front, and the handle reads again, as a new socket's does (Node stops it itself when its
 * buffer is full). takeReadable() stopped it behind Node's back while Node still noted it as
 * reading, so Node would never start it again: its read() had asked for more and waits for it.
 */
export function giveBack(socket: net.Socket, head: Buffer | null): void {
  if (head) socket.unshift(head);
  const handle = handleOf(socket);
  if (!handle || socket.destroyed || typeof handle.readStart !== 'function') return;
  handle.readStart();
  handle.reading = true;
}

/**
 * Closes with an RST where the handle allows it, so the peer does not mistake a dead pair for a
 * clean end; else destroys. resetAndDestroy throws on a non-TCP handle (TLS wrap, Unix socket),
 * destroys with an error when there is no handle, and while connecting waits for a 'connect'
 * that may never come. A TLS socket's TCP socket cannot be reset under its TLS wrap (Node
 * crashes), so there the addon sets SO_LINGER {1, 0} on the fd and the close is the reset; without
 * the addon a TLS peer sees the connection closed.
 */
export function resetSocket(stream: Duplex): void {
  if (stream.destroyed) return;
  if (stream instanceof tls.TLSSocket) {
    lingerZero(stream);
    stream.destroy();
    return;
  }
  if (stream instanceof net.Socket && typeof stream.resetAndDestroy === 'function' && !stream.connecting && handleOf(stream)) {
    try {
      stream.resetAndDestroy();
      return;
    } catch {
      // fall back to a plain destroy
    }
  }
  stream.destroy();
}

function lingerZero(socket: tls.TLSSocket): void {
  const fd = handleOf(socket)?.fd;
  const { binding } = loadNative();
  if (!binding || typeof fd !== 'number' || fd < 0) return;
  try {
    binding.lingerZero(fd);
  } catch {
    // Not a socket any more (closing): a plain close it is.
  }
}
