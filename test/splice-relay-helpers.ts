// A relay on the splice engine for the release and recording tests: real sockets on 127.0.0.1
// or ::1, a hash server behind it, and every pair's control, legs and result at hand.
import net from 'node:net';
import type { ForwardResult } from '../src/index.js';
import type { SpliceControl, SpliceEngine } from '../src/engine/splice/engine.js';
import type { NativePcapSink } from '../src/engine/splice/pcap-sink.js';
import { TcpConversation, timestampNow } from '../src/pcap/tcp-conversation.js';
import * as h from './helpers.js';

export type Host = '127.0.0.1' | '::1';

export interface HashConn {
  socket: net.Socket;
  remotePort: number;
  received: Promise<h.Received>;
  sent: Promise<h.Sent>;
}

/** h.startHashServer on any loopback host: hashes what it gets, sends replyBytes(i) (seed 1000 + i). */
export async function hashServer(host: Host, replyBytes: (i: number) => number, when: 'connect' | 'end') {
  const records = new h.Arrivals<HashConn>();
  const srv = await h.startServer((socket, i) => {
    const received = h.hashUntilEnd(socket);
    const start = when === 'connect' ? Promise.resolve() : received.then(() => undefined);
    const sent = start.then(() => h.writeRandom(socket, 1000 + i, replyBytes(i)));
    sent.catch(() => {});
    records.push({ socket, remotePort: socket.remotePort!, received, sent });
  }, host);
  return { ...srv, records };
}

export async function connect(host: Host, port: number): Promise<net.Socket> {
  const socket = h.track(net.connect({ host, port, allowHalfOpen: true }));
  socket.on('error', () => {});
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', reject);
  });
  return socket;
}

export interface RelayPair {
  index: number;
  /** Side a (accepted from the test client) and side b (connected to the server). */
  client: net.Socket;
  upstream: net.Socket;
  /** The test client's port, and the port the server sees. */
  clientPort: number;
  upstreamPort: number;
  /** Conversations as first recorded: legs[0] client <-> relay, legs[1] relay <-> server. */
  legs: TcpConversation[];
  control: Promise<SpliceControl>;
  result: Promise<ForwardResult>;
}

export interface RelayOptions {
  host: Host;
  /** Record every pair into this sink, with this many legs (default 2). */
  sink?: NativePcapSink;
  legCount?: 1 | 2;
}

/** Accepts, connects to the target, writes the handshakes (when recording), and hands the pair to `engine`. */
export async function startSpliceRelay(engine: SpliceEngine, targetPort: number, options: RelayOptions) {
  const pairs = new h.Arrivals<RelayPair>();
  let accepted = 0;
  const server = net.createServer({ allowHalfOpen: true }, (client) => {
    h.track(client);
    client.on('error', () => {});
    const index = accepted++;
    const upstream = h.track(net.connect({ host: options.host, port: targetPort, allowHalfOpen: true }));
    upstream.on('error', () => {});
    upstream.once('connect', () => {
      const legs: TcpConversation[] = [];
      if (options.sink) {
        legs.push(new TcpConversation({ address: client.remoteAddress!, port: client.remotePort! }, { address: client.localAddress!, port: client.localPort! }));
        if ((options.legCount ?? 2) === 2) {
          legs.push(new TcpConversation({ address: upstream.localAddress!, port: upstream.localPort! }, { address: upstream.remoteAddress!, port: upstream.remotePort! }));
        }
        const ts = timestampNow();
        options.sink.write(Buffer.concat(legs.map((leg) => leg.handshake(ts))));
      }
      let started!: (control: SpliceControl) => void;
      const control = new Promise<SpliceControl>((resolve) => (started = resolve));
      const result = engine.forward(client, upstream, {
        onStart: started,
        record: options.sink ? { sink: options.sink, legs } : undefined,
      });
      result.catch(() => {});
      pairs.push({ index, client, upstream, clientPort: client.remotePort!, upstreamPort: upstream.localPort!, legs, control, result });
    });
  });
  const port = await h.listen(server, options.host);
  return { server, port, pairs };
}

/** fds of this process, less the pipes idling in the engine's pool (they stay for reuse). */
export function fdCount(engine: SpliceEngine): number {
  return h.openFdCount() - 2 * engine.stats().pipesIdle;
}

/** Waits until every socket the test tracked is closed and the fd count is back at `baseline`. */
export async function expectFdsBack(engine: SpliceEngine, baseline: number, table: Map<string, string>): Promise<string | undefined> {
  await h.closeAll();
  const ok = await h.waitFor(() => fdCount(engine) <= baseline, 10_000);
  return ok ? undefined : `fds: baseline ${baseline}, now ${fdCount(engine)}; new: ${JSON.stringify(h.fdDiff(table, h.fdTable()))}`;
}
