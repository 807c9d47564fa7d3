// A control connection after its preamble: length-prefixed JSON frames both ways, heartbeats, and
// one reason for its end. Frames may arrive split anywhere or many to a read.
import type net from 'node:net';
import { decodeMessage, encodeFrame, parseFrame, type ControlMessage, type ParsedControlMessage } from './protocol.js';

/** Why a control connection ended. `remote`: the peer said so in an error message. */
export interface ChannelEnd {
  code: string;
  message: string;
  remote: boolean;
}

export class ChannelClosed extends Error {
  readonly code: string;
  readonly remote: boolean;
  constructor(end: ChannelEnd) {
    super(end.message);
    this.name = 'ChannelClosed';
    this.code = end.code;
    this.remote = end.remote;
  }
}

/** Writes queued past this mean the peer does not read: the channel is closed. */
const MAX_WRITE_BUFFER = 1024 * 1024;
/** After sending an error, the peer gets this long to close before the socket is destroyed. */
const LINGER_MS = 1000;

export class ControlChannel {
  readonly socket: net.Socket;
  readonly closed: Promise<ChannelEnd>;
  #buffer: Buffer;
  #queue: ParsedControlMessage[] = [];
  #waiter: (() => void) | undefined;
  #handler: ((message: ParsedControlMessage) => void) | undefined;
  #end: ChannelEnd | undefined;
  #resolveClosed!: (end: ChannelEnd) => void;
  #pingTimer: NodeJS.Timeout | undefined;
  #deadTimer: NodeJS.Timeout | undefined;
  /** Frames received so far: a dead-peer check compares it across one turn of the event loop. */
  #heard = 0;

  /** `initial`: bytes already read past the preamble. */
  constructor(socket: net.Socket, initial: Buffer = Buffer.alloc(0)) {
    this.socket = socket;
    this.#buffer = initial;
    this.closed = new Promise((resolve) => (this.#resolveClosed = resolve));
    socket.setNoDelay?.(true);
    socket.on('data', (chunk: Buffer) => {
      this.#buffer = this.#buffer.length === 0 ? chunk : Buffer.concat([this.#buffer, chunk]);
      this.#drain();
    });
    socket.on('end', () => {
      this.#finish({ code: 'closed', message: 'the peer closed the connection', remote: false });
      socket.destroy();
    });
    socket.on('error', (err: NodeJS.ErrnoException) => this.#finish({ code: err.code ?? 'EIO', message: err.message, remote: false }));
    socket.on('close', () => this.#finish({ code: 'closed', message: 'the connection closed', remote: false }));
    socket.resume();
    if (this.#buffer.length > 0) queueMicrotask(() => this.#drain());
  }

  get ended(): ChannelEnd | undefined {
    return this.#end;
  }

  /** The next message (handshakes). Rejects with ChannelClosed when the channel ends or `timeoutMs` passes. */
  async next(timeoutMs: number): Promise<ParsedControlMessage> {
    const timer = setTimeout(() => this.fail('handshake-timeout', `no message within ${timeoutMs} ms`), timeoutMs);
    try {
      for (;;) {
        const message = this.#queue.shift();
        if (message) return message;
        if (this.#end) throw new ChannelClosed(this.#end);
        await new Promise<void>((resolve) => (this.#waiter = resolve));
      }
    } finally {
      clearTimeout(timer);
    }
  }

  /** From now on every message goes to `handler` (queued ones first). */
  onMessage(handler: (message: ParsedControlMessage) => void): void {
    this.#handler = handler;
    for (let message = this.#queue.shift(); message && !this.#end; message = this.#queue.shift()) handler(message);
  }

  send(message: ControlMessage): void {
    if (this.#end || this.socket.destroyed) return;
    this.socket.write(encodeFrame(message));
    if (this.socket.writableLength > MAX_WRITE_BUFFER) this.#close({ code: 'write-backlog', message: 'the peer does not read its control connection', remote: false });
  }

  /**
   * Pings every `interval` ms; the channel ends with `heartbeat-timeout` when nothing at all has
   * arrived for `timeout` ms. Any frame counts as a sign of life.
   */
  startHeartbeat(interval: number, timeout: number): void {
    this.#pingTimer = setInterval(() => this.send({ type: 'ping' }), interval);
    this.#deadTimer = setTimeout(() => this.#checkAlive(timeout), timeout);
  }

  /**
   * Timers run before the loop reads its sockets: after this process was blocked (a burst of
   * synchronous work, a long GC) the dead timer fires while the peer's pings of that time still
   * sit unread in the socket. One more turn of the loop reads them; only a peer that still said
   * nothing is dead. A frame read meanwhile has re-armed the timer (refresh() revives a fired one).
   */
  #checkAlive(timeout: number): void {
    const heard = this.#heard;
    setImmediate(() => {
      if (this.#heard === heard) this.fail('heartbeat-timeout', `nothing heard for ${timeout} ms`);
    });
  }

  /** Sends an error message, then closes (FIN, and a reset if the peer has not closed within a second). */
  fail(code: string, message: string): void {
    if (this.#end) return;
    this.send({ type: 'error', code, message });
    this.#close({ code, message, remote: false });
  }

  /** Closes at once, without telling the peer. */
  destroy(code = 'closed', message = 'closed'): void {
    this.#finish({ code, message, remote: false });
    this.socket.destroy();
  }

  #close(end: ChannelEnd): void {
    this.#finish(end);
    const socket = this.socket;
    if (socket.destroyed) return;
    socket.end();
    setTimeout(() => socket.destroy(), LINGER_MS).unref();
  }

  #drain(): void {
    while (!this.#end) {
      const frame = parseFrame(this.#buffer);
      if (frame.status === 'incomplete') return;
      if (frame.status === 'error') return this.fail(frame.code, frame.message);
      this.#buffer = this.#buffer.subarray(frame.consumed);
      this.#heard++;
      this.#deadTimer?.refresh();
      const decoded = decodeMessage(frame.body);
      if (decoded.status === 'error') return this.fail(decoded.code, decoded.message);
      const message = decoded.message;
      if (message.type === 'ping') {
        this.send({ type: 'pong' });
        continue;
      }
      if (message.type === 'pong') continue;
      if (message.type === 'error') {
        this.#close({ code: message.code, message: message.message, remote: true });
        return;
      }
      if (this.#handler) this.#handler(message);
      else {
        this.#queue.push(message);
        this.#wake();
      }
    }
  }

  #finish(end: ChannelEnd): void {
    if (this.#end) return;
    this.#end = end;
    clearInterval(this.#pingTimer);
    clearTimeout(this.#deadTimer);
    this.#buffer = Buffer.alloc(0);
    this.socket.on('error', () => {});
    this.#resolveClosed(end);
    this.#wake();
  }

  #wake(): void {
    const waiter = this.#waiter;
    this.#waiter = undefined;
    waiter?.();
  }
}
