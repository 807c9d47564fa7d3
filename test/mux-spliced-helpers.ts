// Spliced mux sessions for tests: a TCP connection on 127.0.0.1 with a SplicedMuxSession on one
// end, a front listener whose TCP clients become its streams (n:1), and a back that connects
// each peer-opened stream to a TCP target (1:n).
import net from 'node:net';
import { SplicedMuxSession, type SplicedMuxSessionOptions, type SplicedStreamResult } from '../src/mux/spliced-session.js';
import * as h from './helpers.js';

/** A connected TCP pair on 127.0.0.1: `dialled` is the connecting end. */
export async function tcpPair(): Promise<{ dialled: net.Socket; accepted: net.Socket }> {
  let onAccepted!: (s: net.Socket) => void;
  const accepted = new Promise<net.Socket>((resolve) => (onAccepted = resolve));
  const server = net.createServer({ allowHalfOpen: true }, (s) => onAccepted(h.track(s)));
  h.track(server);
  const port = await h.listen(server);
  const dialled = h.track(net.connect({ port, host: h.HOST, allowHalfOpen: true }));
  await new Promise((resolve, reject) => dialled.once('connect', resolve).once('error', reject));
  const socket = await accepted;
  server.close();
  return { dialled, accepted: socket };
}

export function splicedSession(socket: net.Socket, options: SplicedMuxSessionOptions): SplicedMuxSession {
  const session = new SplicedMuxSession(socket, options);
  session.on('error', () => {});
  h.onCleanup(() => session.destroy());
  return session;
}

/** A listener whose every connection is opened as a stream of `session`; the streams' results. */
export async function front(session: SplicedMuxSession): Promise<{ port: number; results: Promise<SplicedStreamResult>[] }> {
  const results: Promise<SplicedStreamResult>[] = [];
  const server = h.track(
    net.createServer({ allowHalfOpen: true }, (socket) => {
      h.track(socket);
      const result = session.openStream(socket);
      result.catch(() => socket.destroy());
      results.push(result);
    }),
  );
  return { port: await h.listen(server), results };
}

/** Connects each stream the peer opens on `session` to 127.0.0.1:`targetPort`; the streams' results. */
export function back(session: SplicedMuxSession, targetPort: number): Promise<SplicedStreamResult>[] {
  const results: Promise<SplicedStreamResult>[] = [];
  session.on('stream', (incoming) => {
    results.push(incoming.result);
    const target = h.track(net.connect({ port: targetPort, host: h.HOST, allowHalfOpen: true }));
    target.once('connect', () => void incoming.accept(target));
    target.once('error', () => incoming.refuse());
  });
  return results;
}

/** A TCP echo server: echoes everything, ends its side after the client's FIN. */
export async function echoServer(): Promise<number> {
  const server = h.track(
    net.createServer({ allowHalfOpen: true }, (s) => {
      h.track(s);
      s.on('error', () => {});
      s.pipe(s);
    }),
  );
  return h.listen(server);
}

/** Connects to 127.0.0.1:port with allowHalfOpen, resolved once connected. */
export async function dial(port: number): Promise<net.Socket> {
  const socket = h.track(net.connect({ port, host: h.HOST, allowHalfOpen: true }));
  await new Promise((resolve, reject) => socket.once('connect', resolve).once('error', reject));
  return socket;
}

/** Writes `bytes` seeded bytes and ends; hashes what comes back until its end. */
export async function echoRoundTrip(socket: net.Socket, seed: number, bytes: number): Promise<{ sent: string; got: string; gotBytes: number }> {
  const received = h.hashUntilEnd(socket);
  const sent = await h.writeRandom(socket, seed, bytes);
  const got = await received;
  return { sent: sent.sha, got: got.sha, gotBytes: got.bytes };
}
