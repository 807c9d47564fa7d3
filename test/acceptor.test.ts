// The native accept path's I/O (the addon's Acceptor) on its own: real sockets on 127.0.0.1, what a
// peer observes, and every fd accounted for.
import fs from 'node:fs';
import net from 'node:net';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Acceptor, type AcceptedHandler } from '../src/engine/splice/acceptor.js';
import { SpliceEngine } from '../src/engine/splice/engine.js';
import { dialWith } from '../src/net/dial.js';
import * as h from './helpers.js';
import { MiB } from './helpers.js';
import { needsSplice } from './policy.js';
import { freePort } from './cli-harness.js';

const HOST = '127.0.0.1';

afterEach(h.closeAll);

/** An acceptor whose connections land in `accepted`, each with a handler that records its events. */
function startAcceptor() {
  const accepted = new h.Arrivals<{ id: number; host: string; port: number; events: Recorded }>();
  const acceptor = new Acceptor({
    onConnection: (id, host, port) => {
      const events = new Recorded();
      acceptor.attach(id, events);
      accepted.push({ id, host, port, events });
    },
  });
  h.onCleanup(() => acceptor.close());
  return { acceptor, accepted };
}

class Recorded implements AcceptedHandler {
  readonly chunks: Buffer[] = [];
  readonly ended = new h.Arrivals<string>();
  data(chunk: Buffer) {
    this.chunks.push(chunk);
    this.ended.push('data');
  }
  eof() {
    this.ended.push('eof');
  }
  failed(code: string) {
    this.ended.push(`failed ${code}`);
  }
  drained() {
    this.ended.push('drained');
  }
  get bytes() {
    return Buffer.concat(this.chunks);
  }
}

function connectTo(port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: HOST, port, allowHalfOpen: true }, () => resolve(socket));
    socket.once('error', reject);
    h.onCleanup(() => socket.destroy());
  });
}

describe('Acceptor', () => {
  beforeEach(needsSplice);

  it('accepts, names the peer, delivers its bytes and its FIN, and writes back', async () => {
    const { acceptor, accepted } = startAcceptor();
    const [bound] = await acceptor.listen([{ host: HOST, port: 0 }]);
    const client = await connectTo(bound.port);
    const conn = await accepted.nth(0, 'the accepted connection');
    expect(conn).toMatchObject({ host: HOST, port: client.localPort });
    client.end('hello, acceptor');
    await h.waitFor(() => conn.events.ended.items.includes('eof'), 5000);
    expect(conn.events.bytes.toString()).toBe('hello, acceptor');
    // Half-closed by the peer, still writable.
    const received = h.collectUntilEnd(client);
    expect(acceptor.write(conn.id, Buffer.from('reply'))).toBe(0);
    acceptor.end(conn.id, Buffer.from(' and bye'));
    expect((await received).toString()).toBe('reply and bye');
    await h.waitFor(() => conn.events.ended.items.includes('drained'), 5000);
    expect(acceptor.closed).toBe(false);
  });

  it('queues what the socket cannot take, and hands it to the engine with the fd: every byte arrives, in order', async () => {
    const { acceptor, accepted } = startAcceptor();
    const [bound] = await acceptor.listen([{ host: HOST, port: 0 }]);
    const client = await connectTo(bound.port);
    client.pause();
    const conn = await accepted.nth(0, 'the accepted connection');
    const big = h.patternBytes(7, 16 * MiB);
    // A peer that does not read cannot take 16 MiB at once: the rest is queued.
    expect(acceptor.write(conn.id, big)).toBe(1);

    const server = await h.startHashServer({ replyBytes: 0, when: 'end' });
    const upstream = await dialWith(acceptor.connector, HOST, server.port, { timeout: 5000 });
    const released = acceptor.release(conn.id)!;
    const fromUpstream = acceptor.release(upstream.id)!;
    expect(released.unsent?.length, 'bytes still queued').toBeGreaterThan(0);
    expect(released.unsent!.length).toBeLessThan(big.length);
    const engine = new SpliceEngine();
    h.onCleanup(() => void engine.close());
    const result = engine.adopt(released.fd, fromUpstream.fd, null, released.unsent, { idleTimeout: 0 });
    const got = h.hashUntilEnd(client);
    client.resume();
    client.end();
    const seen = await got;
    expect(seen.bytes).toBe(big.length);
    expect(seen.sha).toBe(h.sha256(big));
    const outcome = await result;
    expect(outcome).toMatchObject({ engine: 'splice', reason: 'eof' });
  });

  it('reports a refused connect as ECONNREFUSED, and a dial over it says so', async () => {
    const { acceptor } = startAcceptor();
    const port = await freePort();
    await expect(dialWith(acceptor.connector, HOST, port, { timeout: 5000 })).rejects.toMatchObject({ code: 'ECONNREFUSED' });
  });

  it('refuses a second listener on a taken port with EADDRINUSE, naming the address, and closes what it had bound', async () => {
    const { acceptor } = startAcceptor();
    const taken = await h.startServer();
    const other = startAcceptor().acceptor;
    await expect(other.listen([{ host: HOST, port: 0 }, { host: HOST, port: taken.port }])).rejects.toThrow(
      new RegExp(`EADDRINUSE.*127\\.0\\.0\\.1:${taken.port}`),
    );
    expect(other.addresses()).toEqual([]);
    expect(acceptor.addresses()).toEqual([]);
  });

  it('close() ends every connection it holds (each holder hears ECONNABORTED) and every fd it had is closed', async () => {
    const baseline = h.openFdCount();
    const { acceptor, accepted } = startAcceptor();
    const [bound] = await acceptor.listen([{ host: HOST, port: 0 }]);
    const clients = await Promise.all([1, 2, 3].map(() => connectTo(bound.port)));
    for (let i = 0; i < 3; i++) await accepted.nth(i, `connection ${i}`);
    const closedByPeer = clients.map((client) => new Promise<void>((resolve) => client.once('end', () => resolve())));
    for (const client of clients) client.resume();
    acceptor.close();
    for (const conn of accepted.items) expect(conn.events.ended.items).toContain('failed ECONNABORTED');
    await h.within(Promise.all(closedByPeer), 5000, 'every client sees its connection end');
    for (const client of clients) client.destroy();
    expect(await h.waitFor(() => h.openFdCount() <= baseline, 5000), `fds ${h.openFdCount()} vs baseline ${baseline}`).toBe(true);
  });

  it('can be closed from inside one of its own events (a handler that shuts the server down), and is inert after', async () => {
    const baseline = h.openFdCount();
    const closedInside = new h.Arrivals<number>();
    const acceptor: Acceptor = new Acceptor({
      onConnection: (id) => {
        acceptor.close();
        closedInside.push(id);
      },
    });
    h.onCleanup(() => acceptor.close());
    const [bound] = await acceptor.listen([{ host: HOST, port: 0 }]);
    // Several at once, so that the close lands in the middle of a batch of events.
    const clients = await Promise.all([1, 2, 3, 4].map(() => connectTo(bound.port).catch(() => null)));
    await closedInside.nth(0, 'the first connection');
    for (const client of clients) client?.destroy();
    expect(acceptor.closed).toBe(true);
    expect(acceptor.write(1, Buffer.from('x'))).toBe('EBADF');
    await expect(acceptor.listen([{ host: HOST, port: 0 }])).rejects.toThrow(/acceptor is closed/);
    expect(await h.waitFor(() => h.openFdCount() <= baseline, 5000), `fds ${h.openFdCount()} vs baseline ${baseline}`).toBe(true);
  });

  it('SpliceEngine.adopt() owns the fds from the call on: a closed engine or an aborted signal closes them', async () => {
    const server = await h.startServer();
    const pairOfFds = async () => {
      const { acceptor } = startAcceptor();
      const a = await dialWith(acceptor.connector, HOST, server.port, { timeout: 5000 });
      const b = await dialWith(acceptor.connector, HOST, server.port, { timeout: 5000 });
      return [acceptor.release(a.id)!.fd, acceptor.release(b.id)!.fd] as const;
    };
    const open = (fd: number) => {
      try {
        fs.fstatSync(fd);
        return true;
      } catch {
        return false;
      }
    };
    const closed = new SpliceEngine();
    await closed.close();
    const [a1, b1] = await pairOfFds();
    expect(() => closed.adopt(a1, b1, null, null)).toThrow(expect.objectContaining({ code: 'ERR_SPLICE_CLOSED' }));
    expect([open(a1), open(b1)]).toEqual([false, false]);

    const engine = new SpliceEngine();
    h.onCleanup(() => void engine.close());
    const [a2, b2] = await pairOfFds();
    const result = engine.adopt(a2, b2, null, null, { signal: AbortSignal.abort() });
    // Checked at once: an fd number closed is free for the next open.
    expect([open(a2), open(b2)]).toEqual([false, false]);
    expect(await result).toMatchObject({ engine: 'splice', reason: 'aborted' });
  });

  it('checks its arguments: a wrong type is a TypeError, a number out of range a RangeError', () => {
    const { acceptor } = startAcceptor();
    expect(() => acceptor.write('1' as never, Buffer.alloc(1))).toThrow(TypeError);
    expect(() => acceptor.write(1, 'text' as never)).toThrow(/data must be a Buffer/);
    expect(() => acceptor.destroy(-1)).toThrow(RangeError);
    expect(() => acceptor.connector('not an address', 80, () => {})).not.toThrow();
    expect(acceptor.write(12345, Buffer.from('x'))).toBe('EBADF');
    expect(acceptor.release(12345)).toBeNull();
  });
});
