// Clients on 127.0.0.1, and what a peer observed: an end, an error, a reset.
import net from 'node:net';
import fs from 'node:fs';
import { track } from './cleanup.js';

export const HOST = '127.0.0.1';

// ---------------------------------------------------------------------------
// What a peer observes

export interface Observed {
  /** 'end' was emitted (a FIN arrived and every byte before it was read). */
  ended: boolean;
  /** The code of the first 'error', if any. */
  errorCode?: string;
  hadError: boolean;
}

export interface Watch {
  readonly state: Observed;
  /** Resolves at 'close', with what was seen up to then. */
  closed: Promise<Observed>;
  /** Resolves at 'end'. */
  ended: Promise<void>;
  /**
   * Resolves at 'close' or 'end', whichever comes first, with what was seen: a peer that gets a FIN
   * where a reset was due ends (allowHalfOpen) without closing, and the test can say so.
   */
  finished: Promise<Observed>;
}

/** Records 'end', 'error' and 'close' on a socket (and keeps an 'error' listener on it). */
export function watch(socket: net.Socket): Watch {
  const state: Observed = { ended: false, hadError: false };
  socket.on('error', (err: NodeJS.ErrnoException) => {
    state.errorCode ??= err.code ?? err.message;
  });
  const ended = new Promise<void>((resolve) =>
    socket.once('end', () => {
      state.ended = true;
      resolve();
    }),
  );
  const closed = new Promise<Observed>((resolve) =>
    socket.once('close', (hadError: boolean) => {
      state.hadError = hadError;
      resolve({ ...state });
    }),
  );
  const finished = Promise.race([closed, ended.then(() => ({ ...state }))]);
  return { state, closed, ended, finished };
}

/** True when what the socket saw is a reset: an ECONNRESET/EPIPE error. */
export function sawReset(o: Observed): boolean {
  return o.errorCode === 'ECONNRESET' || o.errorCode === 'EPIPE';
}

const TCP_STATES: Record<string, string> = {
  '01': 'ESTABLISHED', '02': 'SYN_SENT', '03': 'SYN_RECV', '04': 'FIN_WAIT1', '05': 'FIN_WAIT2', '06': 'TIME_WAIT',
  '07': 'CLOSE', '08': 'CLOSE_WAIT', '09': 'LAST_ACK', '0A': 'LISTEN', '0B': 'CLOSING',
};

/**
 * The kernel state of the 127.0.0.1 TCP socket localPort -> remotePort (Linux /proc/net/tcp), or
 * undefined when the kernel no longer lists it (a socket that took a reset is unhashed at once).
 */
export function tcpState(localPort: number, remotePort: number): string | undefined {
  const hex = (port: number) => `0100007F:${port.toString(16).toUpperCase().padStart(4, '0')}`;
  for (const line of fs.readFileSync('/proc/net/tcp', 'utf8').split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f[1] === hex(localPort) && f[2] === hex(remotePort)) return TCP_STATES[f[3]] ?? f[3];
  }
  return undefined;
}

/**
 * Whether a peer got a reset. Node shows a reset as an ECONNRESET 'error' only when the socket's
 * receive queue was empty: when data was still queued, libuv reads it and then reports EOF on the
 * EPOLLHUP instead of reading the error (uv__stream_io, the POLLHUP short-circuit), so the socket
 * emits 'end'. Then the kernel tells the two apart: after a FIN the socket sits in CLOSE_WAIT, after a
 * reset it is gone from /proc/net/tcp.
 */
export function peerSawReset(socket: net.Socket, o: Observed): boolean {
  if (sawReset(o)) return true;
  const ports = portsOf(socket);
  return o.ended && ports !== undefined && process.platform === 'linux' && tcpState(ports.local, ports.remote) !== 'CLOSE_WAIT';
}

// ---------------------------------------------------------------------------
// Clients and their ports

// A socket's ports are gone once it is closed; tests look pairs up by them afterwards.
const socketPorts = new WeakMap<net.Socket, { local: number; remote: number }>();

/** Notes a connected socket's ports for portsOf(), which must still answer after it closed. */
export function rememberPorts(socket: net.Socket): void {
  if (socket.localPort !== undefined && socket.remotePort !== undefined) {
    socketPorts.set(socket, { local: socket.localPort, remote: socket.remotePort });
  }
}

/** The local and remote port a connected socket had (still known after it closed). */
export function portsOf(socket: net.Socket): { local: number; remote: number } | undefined {
  return socketPorts.get(socket);
}

/** The local port a client had when it connected (still known after it closed). */
export function localPortOf(socket: net.Socket): number | undefined {
  return socketPorts.get(socket)?.local ?? socket.localPort;
}

/** A plain TCP client to 127.0.0.1:port, allowHalfOpen, connected. */
export async function connectTo(port: number): Promise<net.Socket> {
  const socket = track(net.connect({ host: HOST, port, allowHalfOpen: true }));
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', () => {
      socket.off('error', reject);
      rememberPorts(socket);
      resolve();
    });
    socket.once('error', reject);
  });
  return socket;
}
