// Recording relayed connections as pcap: where the records go (one file, or a file per
// connection) and which TCP conversations a connection's bytes belong to.
//
// A relayed connection is two real TCP connections, so it is recorded as up to two
// conversations ("legs"):
//   client leg: the client ↔ the relay's listening address   (what the client saw)
//   server leg: the relay's upstream socket ↔ the upstream   (what the server saw)
// Bytes are recorded on the client leg as they are read from the client or written to it, and on
// the server leg as they are written to or read from the server, so a fault shows as the
// difference between the legs.
import { createWriteStream, mkdirSync, statSync, type WriteStream } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from '../logger.js';
import { PCAP_GLOBAL_HEADER, TcpConversation, timestampNow, type ConversationState, type Endpoint } from '../pcap/tcp-conversation.js';
import type { Direction } from './toxics.js';

/** Where a pcap file's records go. write() returns false when its queue is full: the caller stops recording. */
export interface PcapSink {
  write(records: Buffer): boolean;
  /** Resolves once every record written is on disk and the file is closed. */
  close(): Promise<void>;
}

export type RecordLegs = 'both' | 'client' | 'server';

export interface RecordOptions {
  /** A file for every connection, or a directory (a path ending in `/`, or an existing directory): one file per connection. */
  path: string;
  /** Default `both`. */
  legs?: RecordLegs;
  /** Bytes a file may have waiting for the disk before a connection's recording is dropped. Default 16 MiB. */
  maxQueuedBytes?: number;
}

export const DEFAULT_MAX_QUEUED_BYTES = 16 * 1024 * 1024;

/** A pcap file written from JS through a bounded queue. */
export class FilePcapSink implements PcapSink {
  readonly #stream: WriteStream;
  readonly #limit: number;
  #failed: Error | undefined;

  constructor(path: string, maxQueuedBytes = DEFAULT_MAX_QUEUED_BYTES) {
    this.#limit = maxQueuedBytes;
    this.#stream = createWriteStream(path, { flags: 'w' });
    this.#stream.on('error', (err) => {
      this.#failed = err;
    });
    this.#stream.write(PCAP_GLOBAL_HEADER);
  }

  write(records: Buffer): boolean {
    if (this.#failed || this.#stream.writableLength + records.length > this.#limit) return false;
    this.#stream.write(records);
    return true;
  }

  close(): Promise<void> {
    return new Promise((resolve) => {
      if (this.#stream.closed) return resolve();
      this.#stream.end(() => resolve());
      this.#stream.once('error', () => resolve());
    });
  }
}

/** Opens a sink for a path; the default writes from JS, a splice engine's writes through its writer thread. */
export type OpenPcapSink = (path: string) => PcapSink | Promise<PcapSink>;

/** The four endpoints of a relayed connection. */
export interface RelayedEndpoints {
  client: Endpoint;
  listener: Endpoint;
  upstreamLocal: Endpoint;
  upstream: Endpoint;
}

/** Both TCP conversations of one relayed connection, written to one sink. */
export class ConnectionRecording {
  clientLeg: TcpConversation | undefined;
  serverLeg: TcpConversation | undefined;
  #dropped = false;
  #closed = false;

  constructor(
    readonly sink: PcapSink,
    endpoints: RelayedEndpoints,
    legs: RecordLegs,
    private readonly onDrop: () => void,
    private readonly ownsSink: boolean,
  ) {
    this.clientLeg = legs !== 'server' ? new TcpConversation(endpoints.client, endpoints.listener) : undefined;
    this.serverLeg = legs !== 'client' ? new TcpConversation(endpoints.upstreamLocal, endpoints.upstream) : undefined;
    const now = timestampNow();
    this.#write(() => Buffer.concat([this.clientLeg?.handshake(now), this.serverLeg?.handshake(now)].filter((b) => b !== undefined)));
  }

  get dropped(): boolean {
    return this.#dropped;
  }

  /** Conversations still being recorded, for a path that records on its own (the splice engine). */
  get legs(): TcpConversation[] {
    return [this.clientLeg, this.serverLeg].filter((leg) => leg !== undefined);
  }

  /** The splice engine recorded a while and hands the conversations back (same order as `legs`). */
  resume(states: readonly ConversationState[]): void {
    let i = 0;
    if (this.clientLeg) this.clientLeg = TcpConversation.fromState(states[i++]!);
    if (this.serverLeg) this.serverLeg = TcpConversation.fromState(states[i++]!);
  }

  /** Bytes read from the source of `direction` (the client for upstream, the server for downstream). */
  received(direction: Direction, data: Buffer): void {
    if (direction === 'upstream') this.#data(this.clientLeg, 'client', data);
    else this.#data(this.serverLeg, 'server', data);
  }

  /** Bytes written to the destination of `direction`. */
  delivered(direction: Direction, data: Buffer): void {
    if (direction === 'upstream') this.#data(this.serverLeg, 'client', data);
    else this.#data(this.clientLeg, 'server', data);
  }

  /** The source of `direction` sent its FIN. */
  receivedEnd(direction: Direction): void {
    if (direction === 'upstream') this.#fin(this.clientLeg, 'client');
    else this.#fin(this.serverLeg, 'server');
  }

  /** The relay sent FIN to the destination of `direction`. */
  deliveredEnd(direction: Direction): void {
    if (direction === 'upstream') this.#fin(this.serverLeg, 'client');
    else this.#fin(this.clientLeg, 'server');
  }

  /** The connection was reset: an RST on each leg still open, from the relay's side. */
  reset(): void {
    const now = timestampNow();
    this.#write(() =>
      Buffer.concat([
        ...(this.clientLeg ? [safe(() => this.clientLeg!.reset('server', now))] : []),
        ...(this.serverLeg ? [safe(() => this.serverLeg!.reset('client', now))] : []),
      ]),
    );
  }

  /** Stops recording (the splice engine dropped it, or the connection is over). */
  drop(): void {
    if (this.#dropped) return;
    this.#dropped = true;
    this.onDrop();
  }

  /** The connection is over: a per-connection file is closed. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    if (this.ownsSink) await this.sink.close();
  }

  #data(leg: TcpConversation | undefined, from: 'client' | 'server', data: Buffer): void {
    if (!leg || data.length === 0) return;
    this.#write(() => leg.data(from, data, timestampNow()));
  }

  #fin(leg: TcpConversation | undefined, from: 'client' | 'server'): void {
    if (!leg) return;
    this.#write(() => safe(() => leg.fin(from, timestampNow())));
  }

  #write(records: () => Buffer): void {
    if (this.#dropped || this.#closed) return;
    const bytes = records();
    if (bytes.length > 0 && !this.sink.write(bytes)) this.drop();
  }
}

// A FIN after an RST, or a second FIN, is not recorded: the conversation already ended.
function safe(make: () => Buffer): Buffer {
  try {
    return make();
  } catch {
    return Buffer.alloc(0);
  }
}

function isDirectoryTarget(path: string): boolean {
  if (path.endsWith('/')) return true;
  try {
    return statSync(path).isDirectory();
  } catch {
    return false;
  }
}

/** Hands out the recording of each relayed connection, to one shared file or one file each. */
export class Recorder {
  readonly perConnection: boolean;
  readonly legs: RecordLegs;
  readonly #path: string;
  readonly #open: OpenPcapSink;
  readonly #logger: Logger | undefined;
  #shared: Promise<PcapSink> | undefined;
  readonly #active = new Set<ConnectionRecording>();
  #droppedCount = 0;

  /** `open` makes the sinks; by default files written from JS (FilePcapSink). */
  constructor(options: RecordOptions, open?: OpenPcapSink, logger?: Logger) {
    this.#path = options.path;
    this.legs = options.legs ?? 'both';
    this.perConnection = isDirectoryTarget(options.path);
    const limit = options.maxQueuedBytes ?? DEFAULT_MAX_QUEUED_BYTES;
    this.#open = open ?? ((path) => new FilePcapSink(path, limit));
    this.#logger = logger;
    if (this.perConnection) mkdirSync(this.#path, { recursive: true });
  }

  /** Recordings dropped because the disk fell behind. */
  get dropped(): number {
    return this.#droppedCount;
  }

  /** The file a connection's records go to. */
  fileFor(relay: string, id: number, client: Endpoint): string {
    if (!this.perConnection) return this.#path;
    const host = client.address.replace(/[^0-9A-Za-z.]/g, '_');
    return join(this.#path, `${relay.replace(/[^\w.-]/g, '_')}-${String(id).padStart(6, '0')}-${host}_${client.port}.pcap`);
  }

  async begin(relay: string, id: number, endpoints: RelayedEndpoints): Promise<ConnectionRecording> {
    const file = this.fileFor(relay, id, endpoints.client);
    let sink: PcapSink;
    if (this.perConnection) sink = await this.#open(file);
    else sink = await (this.#shared ??= Promise.resolve(this.#open(this.#path)));
    const recording = new ConnectionRecording(
      sink,
      endpoints,
      this.legs,
      () => {
        this.#droppedCount++;
        this.#logger?.warn({ relay, connection: id, file }, 'recording dropped: the disk is not keeping up; traffic goes on unrecorded');
      },
      this.perConnection,
    );
    this.#active.add(recording);
    return recording;
  }

  async end(recording: ConnectionRecording): Promise<void> {
    this.#active.delete(recording);
    await recording.close().catch((err: Error) => this.#logger?.warn({ err: err.message }, 'recording: the file was not completed'));
  }

  /** Closes every file once what was written to it is on disk. */
  async close(): Promise<void> {
    await Promise.all([...this.#active].map((recording) => this.end(recording)));
    const shared = await this.#shared?.catch(() => undefined);
    await shared?.close().catch((err: Error) => this.#logger?.warn({ err: err.message, file: this.#path }, 'recording: the file was not completed'));
  }
}
