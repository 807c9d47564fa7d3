// `splicer forward` over yamux, both ends of the hop:
//   n:1  --listen HOST:PORT --to mux://HOST:PORT   every TCP client becomes a stream of one session dialled to the mux end
//   1:n  --listen mux://HOST:PORT --to HOST:PORT   every stream of every session accepted becomes a TCP connection to --to
// A stream is forward()ed to its TCP connection like any pair (the JS engine: a stream is bytes in
// user space), so half-close and resets cross the hop as they would a plain TCP forwarder.
import type net from 'node:net';
import { forward } from '../engine/forward.js';
import { connectTcp } from '../net/connect.js';
import { OpenSet } from '../net/drain.js';
import { formatHostPort, type HostPort } from '../net/host-port.js';
import { Listeners } from '../net/listeners.js';
import type { Logger } from '../logger.js';
import { createMuxSession, type MuxSession } from '../mux/session.js';
import type { MuxStream } from '../mux/stream.js';
import type { MuxSessionOptions } from '../mux/options.js';
import { resetSocket } from '../engine/splice/takeover.js';

export interface MuxForwarderOptions {
  /** Where streams come from: TCP clients ('tcp', n:1) or mux sessions ('mux', 1:n). */
  listenKind: 'tcp' | 'mux';
  listen: HostPort[];
  to: HostPort;
  /** Session options other than the role (maxWindow, maxStreams, keepalive). */
  mux?: Omit<MuxSessionOptions, 'role'>;
  connectTimeout?: number;
  idleTimeout?: number;
  logger?: Logger;
}

export class MuxForwarder {
  private readonly listeners: Listeners;
  private readonly pairs = new OpenSet<Promise<unknown>>();
  private readonly sessions = new Set<MuxSession>();
  /** n:1: the session to the mux end, dialled on the first client and again after it ends. */
  private dialled: Promise<MuxSession> | undefined;
  private closing = false;

  constructor(private readonly options: MuxForwarderOptions) {
    this.listeners = new Listeners((socket) => (options.listenKind === 'tcp' ? this.onClient(socket) : this.onSessionConnection(socket)), {
      pauseOnConnect: options.listenKind === 'tcp',
      logger: options.logger,
    });
  }

  get activeConnections(): number {
    return this.pairs.size;
  }

  listen(): Promise<HostPort[]> {
    return this.listeners.listen(this.options.listen);
  }

  /** Stops accepting; GoAway on every session; pairs get `graceMs` to finish, then everything is closed. */
  async close(graceMs: number): Promise<void> {
    this.closing = true;
    const stopped = this.listeners.close();
    for (const session of this.sessions) void session.close();
    await this.pairs.drained(graceMs);
    for (const session of this.sessions) session.destroy();
    await stopped;
  }

  // ---- n:1: TCP clients → streams of one session ----

  private session(): Promise<MuxSession> {
    if (this.dialled) return this.dialled;
    const attempt: Promise<MuxSession> = (async () => {
      const socket = await connectTcp(this.options.to, this.options.connectTimeout ?? 10_000);
      const session = this.track(createMuxSession(socket, { ...this.options.mux, role: 'client' }));
      session.once('close', () => {
        if (this.dialled === attempt) this.dialled = undefined;
      });
      return session;
    })();
    this.dialled = attempt;
    attempt.catch(() => {
      if (this.dialled === attempt) this.dialled = undefined;
    });
    return attempt;
  }

  private onClient(client: net.Socket): void {
    client.on('error', () => {});
    this.run(
      (async () => {
        let stream: MuxStream;
        try {
          const session = await this.session();
          stream = session.openStream();
        } catch (err) {
          this.options.logger?.warn({ to: `mux://${formatHostPort(this.options.to)}`, err: (err as Error).message }, 'no stream to the mux end');
          resetSocket(client);
          return;
        }
        await forward(client, stream, this.forwardOptions());
      })(),
    );
  }

  // ---- 1:n: mux sessions → a TCP connection per stream ----

  private onSessionConnection(socket: net.Socket): void {
    if (this.closing) return void socket.destroy();
    const session = this.track(createMuxSession(socket, { ...this.options.mux, role: 'server' }));
    session.on('stream', (stream) => {
      stream.on('error', () => {});
      this.run(
        (async () => {
          let upstream: net.Socket;
          try {
            upstream = await connectTcp(this.options.to, this.options.connectTimeout ?? 10_000);
          } catch (err) {
            this.options.logger?.debug({ to: formatHostPort(this.options.to), err: (err as Error).message }, 'connect failed');
            // RST: the client's side sees its stream reset, as a TCP client sees a refused connect.
            stream.destroy();
            return;
          }
          await forward(stream, upstream, this.forwardOptions());
        })(),
      );
    });
  }

  private forwardOptions(): { idleTimeout?: number } {
    return this.options.idleTimeout ? { idleTimeout: this.options.idleTimeout } : {};
  }

  private track(session: MuxSession): MuxSession {
    this.sessions.add(session);
    session.on('error', (err) => this.options.logger?.warn({ err: err.message }, 'mux session failed'));
    session.once('close', () => this.sessions.delete(session));
    return session;
  }

  private run(pair: Promise<unknown>): void {
    const settled = pair.catch((err: Error) => this.options.logger?.warn({ err: err.message }, 'pair failed'));
    this.pairs.add(settled);
    void settled.then(() => this.pairs.delete(settled));
  }
}
