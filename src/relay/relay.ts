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
  /** Bytes each toxic stage may hold before it pushes back. */
  stageOptions?: StageOptions;
  logger?: Logger;
  /** A client was accepted; onConnection follows when it ends. */
  onAccept?: () => void;
  onConnection?: (record: RelayConnectionRecord) => void;
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
  reason: EndReason | 'connect-failed';
  code?: string;
  /** The file its recording went to, when recorded. */
  recording?: string;
  recordingDropped?: boolean;
}

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
    await Promise.all([...this.#connections].map((connection) => connection.abort()));
    await stopped;
  }

  #accept(client: net.Socket): void {
    if (this.#closed) {
      client.destroy();
      return;
    }
    const id = ++this.#accepted;
    this.#options.onAccept?.();
    const connection = new RelayConnection(this.#name, id, client, this.#upstream, this.#rng.fork(`conn:${id}`), this.#options);
    this.#connections.add(connection);
    void connection.run(() => this.#toxics).finally(() => this.#connections.delete(connection));
  }
}

class RelayConnection {
  readonly #controller = new AbortController();
  #engine: RelayConnectionRecord['engine'] = null;
  #userPath: UserPath | undefined;
  #lanes: [Lane, Lane] | undefined;
  #release: (() => void) | undefined;
  #releasing = false;
  #recording: ConnectionRecording | undefined;
  #done: Promise<void> | undefined;
  /** Stages reach the pair through this, before the user path exists. */
  readonly #link: Link = {
    reset: () => this.#userPath?.link.reset(),
    close: () => this.#userPath?.link.close(),
  };

  constructor(
    readonly relay: string,
    readonly id: number,
    readonly client: net.Socket,
    readonly upstream: HostPort,
    readonly rng: Rng,
    readonly options: RelayDataOptions,
  ) {}

  run(toxics: () => readonly Toxic[]): Promise<void> {
    this.#done ??= this.#run(toxics);
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

  async abort(): Promise<void> {
    this.#controller.abort();
    await this.#done;
  }

  async #run(toxics: () => readonly Toxic[]): Promise<void> {
    const started = performance.now();
    const { client, options } = this;
    const record: RelayConnectionRecord = {
      relay: this.relay,
      id: this.id,
      client: formatHostPort({ host: client.remoteAddress ?? '?', port: client.remotePort ?? 0 }),
      upstream: formatHostPort(this.upstream),
      engine: null,
      bytesUp: 0,
      bytesDown: 0,
      durationMs: 0,
      reason: 'connect-failed',
    };
    client.on('error', () => {}); // a reset before the pair starts is reported by the path
    try {
      const upstream = await connectTcp(this.upstream, options.connectTimeout ?? DEFAULT_CONNECT_TIMEOUT_MS, this.#controller.signal);
      this.#recording = await this.#beginRecording(client, upstream, record);
      const result = await this.#forward(client, upstream, toxics);
      Object.assign(record, { engine: this.#engine, bytesUp: result.bytesAtoB, bytesDown: result.bytesBtoA, reason: result.reason, code: result.error?.code });
    } catch (err) {
      // The upstream could not be reached: the client learns it by a reset, as from the server itself.
      record.code = (err as NodeJS.ErrnoException).code ?? 'EIO';
      resetSocket(client);
    } finally {
      if (this.#recording) {
        if (this.#recording.dropped) record.recordingDropped = true;
        await options.recorder?.end(this.#recording);
      }
      record.durationMs = Math.round((performance.now() - started) * 1000) / 1000;
      options.logger?.info(record, 'connection closed');
      options.onConnection?.(record);
    }
  }

  async #beginRecording(client: net.Socket, upstream: net.Socket, record: RelayConnectionRecord): Promise<ConnectionRecording | undefined> {
    const recorder = this.options.recorder;
    if (!recorder) return undefined;
    const endpoint = (address: string | undefined, port: number | undefined) => ({ address: address ?? '0.0.0.0', port: port ?? 0 });
    const clientEnd = endpoint(client.remoteAddress, client.remotePort);
    record.recording = recorder.fileFor(this.relay, this.id, clientEnd);
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
      signal: this.#controller.signal,
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
    const lanes = DIRECTIONS.map((direction) => {
      const rng = this.rng.fork(direction);
      return new Lane(
        toxics.filter((t) => t.stream === direction),
        (toxic) => createToxicStage(toxic, rng.fork(`toxic:${toxic.name}`), this.#link, this.options.stageOptions ?? DEFAULT_STAGE_OPTIONS),
      );
    }) as [Lane, Lane];
    this.#lanes = lanes;
    this.#userPath = runUserPath(client, upstream, {
      lanes,
      recording: this.#recording,
      signal: this.#controller.signal,
      idleTimeout: this.options.idleTimeout,
      start,
    });
    return this.#userPath.done;
  }
}
