// The step every protocol ends in: check the rules, connect to the destination
// (every resolved address, each checked against the rules too), send the
// protocol's reply, and hand the pair to forward().
import net from 'node:net';
import type { Duplex } from 'node:stream';
import { formatHostPort } from '../net/host-port.js';
import { defaultSpliceEngine, forward } from '../engine/forward.js';
import type { SpliceEngine } from '../engine/splice/engine.js';
import type { EngineChoice, ForwardResult } from '../engine/contract.js';
import { DialError } from '../net/connect.js';
import { dial, type LookupAll } from '../net/dial.js';
import { evaluateAccess, type ProxyCommand, type Rule } from './rules.js';
import { SessionClosed, type ClientSession, type HandshakeSession } from './session.js';
import { NativeSession } from './native-session.js';
import type { NativeUpstream } from '../engine/splice/acceptor.js';
import { dialWith } from '../net/dial.js';
import type { ProxyConnectionRecord } from './options.js';

/** How a protocol words its replies. */
export interface Replies {
  /** The reply to send once the destination is connected, naming the local address of the upstream socket. */
  success(bound: { host: string; port: number }): { reply: Buffer; code: number };
  /** The reply for a failure; `code` is an errno name, or EACCES for "denied by the rules". */
  failure(code: string): { reply: Buffer; code: number };
}

export interface TunnelContext {
  rules: readonly Rule[];
  connectTimeout: number;
  idleTimeout: number;
  engine?: EngineChoice;
  spliceEngine?: SpliceEngine;
  lookup?: LookupAll;
  /** Whether an IP is the proxy's own host, refused unless a rule names it; absent when the host is not protected. */
  isHostAddress?: (ip: string) => boolean;
  /** Aborted when the server shuts down. */
  signal: AbortSignal;
}

/**
 * A connection whose pair the engine holds: the handshake's work is done, and its frames can end
 * while `forwarding` runs, so that nothing the handshake used stays alive for the pair's life.
 * `forwarding` resolves when the pair ends, the record complete.
 */
export interface Handover {
  forwarding: Promise<void>;
}

export interface Destination {
  host: string;
  port: number;
  command: ProxyCommand;
  user?: string;
}

/** Who asks: a socket or a session, by its address. */
export interface Client {
  readonly remoteAddress?: string;
}

function check(ctx: TunnelContext, client: Client, dest: Destination, destAddress?: string) {
  const subject = {
    client: client.remoteAddress ?? '',
    destHost: dest.host,
    destAddress,
    destPort: dest.port,
    command: dest.command,
    user: dest.user,
  };
  return evaluateAccess(ctx.rules, subject, ctx.isHostAddress);
}

/** Whether the rules (and the host guard) let this client reach `dest` at `destAddress` (the resolved address, when it is known). */
export function allowed(ctx: TunnelContext, client: Client, dest: Destination, destAddress?: string): boolean {
  return check(ctx, client, dest, destAddress).allowed;
}

/**
 * The check before DNS. A name that no rule names yet may still be allowed by
 * its address (an allow rule by CIDR), so only an explicit deny refuses it here;
 * every resolved address is checked before it is tried.
 */
export function refusedBeforeLookup(ctx: TunnelContext, client: Client, dest: Destination): boolean {
  const verdict = check(ctx, client, dest);
  if (verdict.allowed) return false;
  return verdict.rule !== undefined || net.isIP(dest.host) !== 0;
}

export async function connectAndForward(
  session: HandshakeSession,
  dest: Destination,
  replies: Replies,
  ctx: TunnelContext,
  record: ProxyConnectionRecord,
): Promise<Handover | void> {
  record.destination = formatHostPort(dest);
  if (refusedBeforeLookup(ctx, session, dest)) return refuse(session, replies, 'EACCES', 'denied', record);
  if (session instanceof NativeSession) return connectAndSplice(session, dest, replies, ctx, record);
  const client = (session as ClientSession<Duplex>).socket;

  let upstream: net.Socket;
  try {
    upstream = await dial(dest.host, dest.port, dialOptions(ctx, session, dest));
  } catch (err) {
    return refuseFor(err, session, replies, record);
  }
  if (client.destroyed) {
    upstream.destroy();
    record.outcome = 'client-closed';
    return;
  }

  const optimistic = session.detach();
  return replyAndForward(client, upstream, replies.success({ host: upstream.localAddress ?? '0.0.0.0', port: upstream.localPort ?? 0 }), optimistic, ctx, record);
}

/** CONNECT on the native path: the addon dials, and the engine adopts both fds. No net.Socket. */
async function connectAndSplice(session: NativeSession, dest: Destination, replies: Replies, ctx: TunnelContext, record: ProxyConnectionRecord): Promise<Handover | void> {
  let upstream: NativeUpstream;
  try {
    upstream = await dialWith(session.acceptor.connector, dest.host, dest.port, dialOptions(ctx, session, dest));
  } catch (err) {
    return refuseFor(err, session, replies, record);
  }
  if (session.gone) {
    session.acceptor.destroy(upstream.id);
    record.outcome = 'client-closed';
    return;
  }
  const success = replies.success({ host: upstream.localAddress, port: upstream.localPort });
  session.write(success.reply);
  record.reply = success.code;
  const optimistic = session.detach();
  const handover = new SplicedHandover(record);
  try {
    session.splice(upstream, optimistic, ctx.spliceEngine ?? defaultSpliceEngine(), { idleTimeout: ctx.idleTimeout, signal: ctx.signal }, handover.ended);
  } catch (err) {
    session.acceptor.destroy(upstream.id);
    session.destroy();
    record.outcome = err instanceof SessionClosed || (err as NodeJS.ErrnoException).code === 'ECONNRESET' ? 'client-closed' : 'error';
    return;
  }
  return handover;
}

/**
 * The handover of a pair adopted by the engine (the native path): no promise while the pair
 * lives. The engine holds `ended` (bound to it), which completes the record (the engine counts
 * the heads it was given among the bytes it carried) and calls what `onEnd` was given;
 * `forwarding` is made only when asked for.
 */
export class SplicedHandover implements Handover {
  readonly ended: (result: ForwardResult) => void;
  #record: ProxyConnectionRecord | undefined;
  #listener: (() => void) | undefined;

  constructor(record: ProxyConnectionRecord) {
    this.#record = record;
    this.ended = this.#ended.bind(this);
  }

  #ended(result: ForwardResult): void {
    const record = this.#record;
    if (!record) return;
    this.#record = undefined;
    completes(record, 0)(result);
    const listener = this.#listener;
    this.#listener = undefined;
    listener?.();
  }

  /** Calls `listener` once the pair has ended and the record is complete (at once if it has). */
  onEnd(listener: () => void): void {
    if (this.#record) this.#listener = listener;
    else listener();
  }

  get forwarding(): Promise<void> {
    return new Promise((resolve) => this.onEnd(resolve));
  }
}

/** What completes the record when the pair ends; a closure over the record alone. */
function completes(record: ProxyConnectionRecord, sentAhead: number): (result: ForwardResult) => void {
  return (result) => {
    record.engine = result.engine;
    record.bytesUp = result.bytesAtoB + sentAhead;
    record.bytesDown = result.bytesBtoA;
    record.outcome = result.reason;
    if (result.error) record.code = result.error.code;
  };
}

function dialOptions(ctx: TunnelContext, client: Client, dest: Destination) {
  return {
    timeout: ctx.connectTimeout,
    lookup: ctx.lookup,
    signal: ctx.signal,
    allowAddress: (address: string) => allowed(ctx, client, dest, address),
  };
}

function refuseFor(err: unknown, session: HandshakeSession, replies: Replies, record: ProxyConnectionRecord): void {
  const code = err instanceof DialError ? err.code : ((err as NodeJS.ErrnoException).code ?? 'EIO');
  refuse(session, replies, code, code === 'EACCES' ? 'denied' : code, record);
}

/**
 * The end of every successful command: the success reply to the client, the bytes the client sent
 * right behind its request to the other side first (forward() waits until they are written), then
 * the pair to forward(), whose result completes the record.
 */
export function replyAndForward(
  client: Duplex,
  other: Duplex,
  success: { reply: Buffer; code: number },
  optimistic: Buffer,
  ctx: TunnelContext,
  record: ProxyConnectionRecord,
): Handover {
  client.write(success.reply);
  record.reply = success.code;
  if (optimistic.length > 0) other.write(optimistic);
  const result = forward(client, other, {
    engine: ctx.engine,
    idleTimeout: ctx.idleTimeout,
    signal: ctx.signal,
    spliceEngine: ctx.spliceEngine,
  });
  // forward() rejects only before the pair runs (an engine closed under it): the sockets are still ours then.
  const release = (err: unknown) => {
    client.destroy();
    other.destroy();
    throw err;
  };
  return { forwarding: result.then(completes(record, optimistic.length), release) };
}

export function refuse(session: HandshakeSession, replies: Replies, code: string, outcome: string, record: ProxyConnectionRecord): void {
  const { reply, code: replyCode } = replies.failure(code);
  record.outcome = outcome;
  record.reply = replyCode;
  session.close(reply);
}
