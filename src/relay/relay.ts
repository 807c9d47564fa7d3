// The relay's data path: one RelayListener per named relay. Each accepted client gets an
// upstream connection of its own, then its bytes take one of two paths:
//   - no toxic: the splice engine, recording (if any) done natively by tee();
//   - toxics: the user-space path (user-path.ts), where each direction runs through a Lane.
// A toxic added while a connection is spliced moves it to user space without a lost byte
// (SpliceEngine release); it stays there until it ends.
import type net from 'node:net';
import { formatHostPort, type HostPort } from '../net/host-port.js';
import { connectTcp, DEFAULT_CONNECT_TIMEOUT_MS } from '../net/connect.js';
import { chooseEngine, defaultSpliceEngine } from '../engine/forward.js';
import { resetSocket } from '../engine/splice/takeover.js';
import { Listeners, type OpenListenFd } from '../net/listeners.js';
import { clientOf, headerToSend, ProxyHeaderError, readProxyHeader, type ProxyProtocolVersion } from '../net/proxy-header.js';
import type { ProxyHeader } from '../protocol/proxy-protocol.js';
import type { Logger } from '../logger.js';
import type { SpliceEngine } from '../engine/splice/engine.js';
import { NativePcapSink } from '../engine/splice/pcap-sink.js';
import type { EngineChoice, EngineName, EndReason, ForwardResult } from '../engine/contract.js';
import { Lane } from './lane.js';
import { createRng, type Rng } from './random.js';
import type { ConnectionRecording, Recorder } from './recording.js';
import { createToxicStage } from './stages.js';
import { DEFAULT_MAX_DELAYED_BYTES, DEFAULT_MAX_HELD_BYTES, type Link, type StageOptions } from './timed-stage.js';
import type { Direction, Toxic } from './toxics.js';
import type { OpenRelayListener, RelayEndpoint, RelayListener } from './listener.js';
import { setMaxListeners } from 'node:events';
import { runUserPath, type DirectionStart, type UserPath } from './user-path.js';

export interface RelayDataOptions {
  /** `auto` (default): unfaulted connections are spliced when the addon and sockets allow it. */
  engine?: EngineChoice;
  spliceEngine?: SpliceEngine;
  /** Listen on sockets this makes (SO_REUSEPORT ones, one per worker process) rather than Node's. */
  listenFd?: OpenListenFd;
  /** Every random decision of every toxic derives from this. */
  seed: number;
  recorder?: Recorder;
  /** ms to wait for the upstream; the client is reset after that. */
  connectTimeout?: number;
  /** ms with no byte either way before a connection is closed; 0 = never. */
  idleTimeout?: number;
  /** Every connection starts with a PROXY protocol header, whose source is the client in records; one without is closed. */
  acceptProxyProtocol?: boolean;
  /** ms a connection has to send its PROXY header. */
  proxyHeaderTimeout?: number;
  /** A PROXY protocol header of this version goes to each upstream before any client byte (and before the toxics). */
  sendProxyProtocol?: ProxyProtocolVersion;
  /** Bytes each toxic stage may hold before it pushes back. */
  stageOptions?: StageOptions;
  logger?: Logger;
  /** A client was accepted; onEnd follows when it ends. */
  onAccept?: () => void;
  onEnd?: () => void;
  /** The record of a connection that ended, when one was made: with an info logger, or when wantsRecord() says so. */
  onConnection?: (record: RelayConnectionRecord) => void;
  /** Whether onConnection has a taker now (default: whenever onConnection is given). */
  wantsRecord?: () => boolean;
}

/** What a relayed connection did, reported once when it ends. */
export interface RelayConnectionRecord {
  relay: string;
  id: number;
  client: string;
  upstream: string;
  /** `splice`, `js`, or `splice+js` when a toxic moved it to user space. */
  engine: EngineName | 'splice+js' | null;
  bytesUp: number;
  bytesDown: number;
  durationMs: number;
  /** `proxy-header`: no valid PROXY header came (code: ERR_PROXY_HEADER, ETIMEDOUT, ECONNRESET). */
  reason: EndReason | 'connect-failed' | 'proxy-header';
  code?: string;
  /** The file its recording went to, when recorded. */
  recording?: string;
  recordingDropped?: boolean;
}

const DEFAULT_PROXY_HEADER_TIMEOUT_MS = 10_000;

const DIRECTIONS: readonly [Direction, Direction] = ['upstream', 'downstream'];

/**
 * A latency stage holds up to 32 MiB (per connection and direction): what arrives during one
 * latency period, so the delay costs no throughput up to 32 MiB per latency (320 MB/s at 100 ms).
 * Pacing stages (bandwidth, slicer, stall) hold 256 KiB, about a TCP window, so their sender
 * feels the pace. Full, a stage stops reading and TCP backpressure reaches the sender.
 */
export const DEFAULT_STAGE_OPTIONS: StageOptions = { maxHeldBytes: DEFAULT_MAX_HELD_BYTES, maxDelayedBytes: DEFAULT_MAX_DELAYED_BYTES };

/** The data path for named relays, as the control layer (registry) opens them. */
export function relayDataPath(options: RelayDataOptions): OpenRelayListener {
  const base = createRng(options.seed);
  return async (endpoint, toxics) => {
    const listener = new DataListener(endpoint, toxics, base.fork(`relay:${endpoint.name}`), options);
    await listener.listen(endpoint.listen);
    return listener;
  };
}

class DataListener implements RelayListener {
  readonly #name: string;
  readonly #options: RelayDataOptions;
  readonly #rng: Rng;
  readonly #listeners: Listeners;
  readonly #connections = new Set<RelayConnection>();
  /** Aborted by close(): every connection of this listener ends with it. */
  readonly #abort = new AbortController();
  readonly #currentToxics = () => this.#toxics;
  #upstream: HostPort;
  #toxics: readonly Toxic[];
  #accepted = 0;
  #closed = false;
  address: HostPort = { host: '', port: 0 };

  constructor(endpoint: RelayEndpoint, toxics: readonly Toxic[], rng: Rng, options: RelayDataOptions) {
    this.#name = endpoint.name;
    this.#upstream = endpoint.upstream;
    this.#toxics = toxics;
    this.#rng = rng;
    this.#options = options;
    // One listener per connection on it is the design, not a leak.
    setMaxListeners(0, this.#abort.signal);
    // The client is not read before the upstream is connected: what it sends meanwhile waits in the kernel.
    this.#listeners = new Listeners((socket) => this.#accept(socket), { pauseOnConnect: true, listenFd: options.listenFd, logger: options.logger });
  }

  async listen(address: HostPort): Promise<void> {
    [this.address] = await this.#listeners.listen([address]);
  }

  get activeConnections(): number {
    return this.#connections.size;
  }

  setUpstream(upstream: HostPort): void {
    this.#upstream = upstream;
  }

  setToxics(toxics: readonly Toxic[]): void {
    this.#toxics = [...toxics];
    for (const connection of this.#connections) connection.applyToxics(this.#toxics);
  }

  async close(): Promise<void> {
    this.#closed = true;
    const stopped = this.#listeners.close();
    this.#abort.abort();
    await Promise.all([...this.#connections].map((connection) => connection.done));
    await stopped;
  }

  #accept(client: net.Socket): void {
    if (this.#closed) {
      client.destroy();
      return;
    }
    const id = ++this.#accepted;
    this.#options.onAccept?.();
    const connection = new RelayConnection(this.#name, id, client, this.#upstream, this.#rng, this.#abort.signal, this.#options);
    this.#connections.add(connection);
    void connection.run(this.#currentToxics).finally(() => this.#connections.delete(connection));
  }
}

class RelayConnection {
  #engine: RelayConnectionRecord['engine'] = null;
  #userPath: UserPath | undefined;
  #lanes: [Lane, Lane] | undefined;
  #release: (() => void) | undefined;
  #releasing = false;
  #recording: ConnectionRecording | undefined;
  #recordingFile: string | undefined;
  #done: Promise<void> | undefined;

  constructor(
    readonly relay: string,
    readonly id: number,
    readonly client: net.Socket,
    readonly upstream: HostPort,
    /** The listener's: this connection's own stream is forked from it (by id) when a toxic needs one. */
    readonly listenerRng: Rng,
    readonly signal: AbortSignal,
    readonly options: RelayDataOptions,
  ) {}

  run(toxics: () => readonly Toxic[]): Promise<void> {
    this.#done ??= this.#run(toxics);
    return this.#done;
  }

  /** Settles once the connection has ended and been reported. */
  get done(): Promise<void> | undefined {
    return this.#done;
  }

  /** A toxic list change: live lanes follow it; a spliced pair moves to user space first. */
  applyToxics(toxics: readonly Toxic[]): void {
    if (this.#lanes) {
      this.#lanes[0].update(toxics.filter((t) => t.stream === 'upstream'));
      this.#lanes[1].update(toxics.filter((t) => t.stream === 'downstream'));
    } else if (this.#release && toxics.length > 0 && !this.#releasing) {
      this.#releasing = true;
      this.#release();
    }
  }

  async #run(toxics: () => readonly Toxic[]): Promise<void> {
    const started = performance.now();
    const { client, options } = this;
    // Read now, while the socket has it (it is closed once the engine takes the pair); printed only for a record.
    let host = client.remoteAddress;
    let port = client.remotePort;
    const peer = { address: host, port };
    const local = { address: client.localAddress, port: client.localPort };
    let result: ForwardResult | undefined;
    let code: string | undefined;
    let failed: RelayConnectionRecord['reason'] = 'connect-failed';
    let header: ProxyHeader | undefined;
    client.on('error', ignore); // a reset before the pair starts is reported by the path
    try {
      if (options.acceptProxyProtocol) {
        header = await readProxyHeader(client, options.proxyHeaderTimeout ?? DEFAULT_PROXY_HEADER_TIMEOUT_MS, this.signal);
        ({ address: host, port } = clientOf(header, { address: host ?? '', port: port ?? 0 }));
      }
      const upstream = await connectTcp(this.upstream, options.connectTimeout ?? DEFAULT_CONNECT_TIMEOUT_MS, this.signal);
      // Queued ahead of the pair, outside the toxics: it is the relay's word to the upstream, not the client's bytes.
      if (options.sendProxyProtocol) upstream.write(headerToSend(options.sendProxyProtocol, header, peer, local));
      if (options.recorder) this.#recording = await this.#beginRecording(options.recorder, client, upstream);
      result = await this.#forward(client, upstream, toxics);
      code = result.error?.code;
    } catch (err) {
      code = (err as NodeJS.ErrnoException).code ?? 'EIO';
      if (err instanceof ProxyHeaderError) {
        // Never guessed: a connection that does not say who it is for is not served.
        failed = 'proxy-header';
        client.destroy();
      } else {
        // The upstream could not be reached: the client learns it by a reset, as from the server itself.
        resetSocket(client);
      }
    } finally {
      const dropped = this.#recording?.dropped === true;
      if (this.#recording) await options.recorder?.end(this.#recording);
      options.onEnd?.();
      const logger = options.logger;
      const logs = logger !== undefined && (typeof logger.isLevelEnabled !== 'function' || logger.isLevelEnabled('info'));
      const wanted = options.onConnection !== undefined && (options.wantsRecord?.() ?? true);
      // Nobody reads the record: none is made.
      if (logs || wanted) {
        const record: RelayConnectionRecord = {
          relay: this.relay,
          id: this.id,
          client: formatHostPort({ host: host ?? '?', port: port ?? 0 }),
          upstream: formatHostPort(this.upstream),
          engine: result ? this.#engine : null,
          bytesUp: result?.bytesAtoB ?? 0,
          bytesDown: result?.bytesBtoA ?? 0,
          durationMs: Math.round((performance.now() - started) * 1000) / 1000,
          reason: result?.reason ?? failed,
        };
        if (code !== undefined) record.code = code;
        if (this.#recordingFile !== undefined) record.recording = this.#recordingFile;
        if (dropped) record.recordingDropped = true;
        logger?.info(record, 'connection closed');
        if (wanted) options.onConnection!(record);
      }
    }
  }

  async #beginRecording(recorder: Recorder, client: net.Socket, upstream: net.Socket): Promise<ConnectionRecording | undefined> {
    const endpoint = (address: string | undefined, port: number | undefined) => ({ address: address ?? '0.0.0.0', port: port ?? 0 });
    const clientEnd = endpoint(client.remoteAddress, client.remotePort);
    this.#recordingFile = recorder.fileFor(this.relay, this.id, clientEnd);
    return recorder.begin(this.relay, this.id, {
      client: clientEnd,
      listener: endpoint(client.localAddress, client.localPort),
      upstreamLocal: endpoint(upstream.localAddress, upstream.localPort),
      upstream: endpoint(upstream.remoteAddress, upstream.remotePort),
    });
  }

  async #forward(client: net.Socket, upstream: net.Socket, toxics: () => readonly Toxic[]): Promise<ForwardResult> {
    const { options } = this;
    const recording = this.#recording;
    const spliced =
      toxics().length === 0 && chooseEngine(client, upstream, { engine: options.engine, spliceEngine: options.spliceEngine }).engine === 'splice';
    // Only now is there an engine to ask for: without the addon there is none to make.
    const engine = spliced ? (options.spliceEngine ?? defaultSpliceEngine()) : undefined;
    // A recording can stay spliced only when its file is written by this engine (tee into the file).
    const recordable = !recording || (recording.sink instanceof NativePcapSink && recording.sink.engine === engine && !recording.dropped);
    if (!engine || !recordable) return this.#runUser(client, upstream, toxics(), 'js');
    this.#engine = 'splice';
    const result = await engine.forward(client, upstream, {
      idleTimeout: options.idleTimeout,
      signal: this.signal,
      onStart: (control) => {
        this.#release = () => control.release();
      },
      record: recording ? { sink: recording.sink as NativePcapSink, legs: recording.legs } : undefined,
    });
    this.#release = undefined;
    if (result.recordingDropped) recording?.drop();
    const released = result.released;
    if (result.reason !== 'released' || !released) return result;
    if (recording && !recording.dropped) {
      if (released.recording) recording.resume(released.recording);
      else recording.drop();
    }
    const rest = await this.#runUser(released.a, released.b, toxics(), 'splice+js', [
      { pending: released.pendingAtoB, ended: released.endedAtoB, finished: released.finishedAtoB },
      { pending: released.pendingBtoA, ended: released.endedBtoA, finished: released.finishedBtoA },
    ]);
    return { ...rest, bytesAtoB: result.bytesAtoB + rest.bytesAtoB, bytesBtoA: result.bytesBtoA + rest.bytesBtoA, durationMs: result.durationMs + rest.durationMs };
  }

  #runUser(
    client: net.Socket,
    upstream: net.Socket,
    toxics: readonly Toxic[],
    engine: RelayConnectionRecord['engine'],
    start?: readonly [DirectionStart, DirectionStart],
  ): Promise<ForwardResult> {
    this.#engine = engine;
    // Stages reach the pair through this, before the user path exists.
    const link: Link = {
      reset: () => this.#userPath?.link.reset(),
      close: () => this.#userPath?.link.close(),
    };
    // The same stream whenever it is forked: fork() derives it from the key, not from what was drawn.
    const connectionRng = this.listenerRng.fork(`conn:${this.id}`);
    const lanes = DIRECTIONS.map((direction) => {
      const rng = connectionRng.fork(direction);
      return new Lane(
        toxics.filter((t) => t.stream === direction),
        (toxic) => createToxicStage(toxic, rng.fork(`toxic:${toxic.name}`), link, this.options.stageOptions ?? DEFAULT_STAGE_OPTIONS),
      );
    }) as [Lane, Lane];
    this.#lanes = lanes;
    this.#userPath = runUserPath(client, upstream, {
      lanes,
      recording: this.#recording,
      signal: this.signal,
      idleTimeout: this.options.idleTimeout,
      start,
    });
    return this.#userPath.done;
  }
}

function ignore(): void {}
