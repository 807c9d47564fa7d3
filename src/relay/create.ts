// createRelay(): the library face of `splicer relay`. It wires the data path (relay.ts), the named
// relays with Toxiproxy's semantics (registry.ts), optional recording and the optional HTTP API.
import { EventEmitter } from 'node:events';
import { formatHostPort, type HostPort } from '../net/host-port.js';
import { engines } from '../engine/forward.js';
import type { Logger } from '../logger.js';
import type { OpenListenFd } from '../net/listeners.js';
import { SpliceEngine } from '../engine/splice/engine.js';
import type { EngineChoice, EngineName } from '../engine/contract.js';
import { startRelayApi, type RelayApi } from './api.js';
import type { RelayChangeInput, RelayInput, ToxicChangeInput } from './control-input.js';
import { randomSeed } from './random.js';
import { openNativePcap } from '../engine/splice/pcap-sink.js';
import { Recorder, type RecordOptions } from './recording.js';
import { RelayRegistry } from './registry.js';
import type { RelayView } from './view.js';
import { relayDataPath, type RelayConnectionRecord } from './relay.js';
import type { Toxic, ToxicInput } from './toxics.js';

/** A relay to open at start: Toxiproxy's proxy JSON, plus toxics to add to it. */
export interface RelayConfig extends RelayInput {
  toxics?: ToxicInput[];
}

export interface RelayOptions {
  relays?: RelayConfig[];
  /** Serve Toxiproxy's HTTP API here (loopback unless `open`). */
  api?: { host?: string; port?: number };
  /** Record every connection as pcap: a file, or a directory for one file per connection. */
  record?: RecordOptions;
  /** Every random decision of every toxic derives from it; default: a random seed, see `relay.seed`. */
  seed?: number;
  /** `auto` (default): unfaulted connections are spliced where the addon allows it. */
  engine?: EngineChoice;
  /** Default: one made for this relay (and closed with it) when the addon is there. */
  spliceEngine?: SpliceEngine;
  /** Listen on sockets this makes (SO_REUSEPORT ones, one per worker process) rather than Node's. */
  listenFd?: OpenListenFd;
  /** Allow listen and API addresses beyond loopback. */
  open?: boolean;
  /**
   * Refuse what Toxiproxy's API lets through: unknown fields and attributes, toxicity outside 0..1,
   * a stream not in lower case, renames, and partial populates. Default false.
   */
  strictApi?: boolean;
  /** ms to wait for an upstream; the client is reset after that. Default 10 s. */
  connectTimeout?: number;
  /** ms with no byte either way before a connection is closed; 0 = never (default). */
  idleTimeout?: number;
  /** Every connection of every relay starts with a PROXY protocol header (v1 or v2); one without is closed. */
  acceptProxyProtocol?: boolean;
  /** ms a connection has to send its PROXY header. Default 10 s. */
  proxyHeaderTimeout?: number;
  /** Each upstream gets a PROXY protocol header of this version before any client byte. */
  sendProxyProtocol?: 1 | 2;
  logger?: Logger;
}

export class Relay extends EventEmitter<{ connection: [RelayConnectionRecord] }> {
  readonly seed: number;
  readonly registry: RelayRegistry;
  readonly recorder: Recorder | undefined;
  api: RelayApi | undefined;
  /** What unfaulted connections run on: `splice`, or `js` where the addon is off or `engine: 'js'`. */
  readonly engine: EngineName;
  readonly #ownEngine: SpliceEngine | undefined;
  #active = 0;
  #closing: Promise<void> | undefined;

  /** Use createRelay(). */
  constructor(options: RelayOptions) {
    super();
    this.seed = options.seed ?? randomSeed();
    const spliceOff = engines().splice.reason;
    if (options.engine === 'splice' && spliceOff && !options.spliceEngine) {
      throw Object.assign(new Error(`engine 'splice': the splice engine is not available here (${spliceOff})`), { code: 'ERR_SPLICE_UNAVAILABLE' });
    }
    const wantsSplice = options.engine !== 'js' && (options.spliceEngine !== undefined || !spliceOff);
    this.#ownEngine = wantsSplice && !options.spliceEngine ? new SpliceEngine() : undefined;
    const spliceEngine = wantsSplice ? (options.spliceEngine ?? this.#ownEngine) : undefined;
    this.engine = spliceEngine ? 'splice' : 'js';
    // With a splice engine, files are written by its writer thread, so spliced connections are
    // recorded by tee() without their bytes entering JS, in the same files as the others.
    const openSink = spliceEngine
      ? (path: string) => openNativePcap(spliceEngine, path, { onError: (err) => options.logger?.warn({ err: err.message, file: path }, 'recording stopped') })
      : undefined;
    this.recorder = options.record ? new Recorder(options.record, openSink, options.logger) : undefined;
    this.registry = new RelayRegistry({
      open: options.open,
      strictApi: options.strictApi,
      logger: options.logger,
      openListener: relayDataPath({
        seed: this.seed,
        engine: options.engine,
        spliceEngine,
        listenFd: options.listenFd,
        recorder: this.recorder,
        connectTimeout: options.connectTimeout,
        idleTimeout: options.idleTimeout,
        acceptProxyProtocol: options.acceptProxyProtocol,
        proxyHeaderTimeout: options.proxyHeaderTimeout,
        sendProxyProtocol: options.sendProxyProtocol,
        logger: options.logger,
        onAccept: () => this.#active++,
        onEnd: () => this.#active--,
        onConnection: (record) => this.emit('connection', record),
        wantsRecord: () => this.listenerCount('connection') > 0,
      }),
    });
  }

  /** Client connections open now, across every relay. */
  get activeConnections(): number {
    return this.#active;
  }

  list(): Record<string, RelayView> {
    return this.registry.list();
  }
  get(name: string): RelayView {
    return this.registry.get(name);
  }
  create(input: RelayInput): Promise<RelayView> {
    return this.registry.create(input);
  }
  update(name: string, input: RelayChangeInput): Promise<RelayView> {
    return this.registry.update(name, input);
  }
  remove(name: string): Promise<void> {
    return this.registry.remove(name);
  }
  /** A config file read again: see RelayRegistry.reconcile. */
  reconcile(configs: readonly RelayConfig[], dropped: readonly string[]): Promise<void> {
    return this.registry.reconcile(configs, dropped);
  }
  populate(input: RelayInput[]): Promise<RelayView[]> {
    return this.registry.populate(input);
  }
  reset(): Promise<void> {
    return this.registry.reset();
  }
  toxics(name: string): Toxic[] {
    return this.registry.toxics(name);
  }
  addToxic(name: string, toxic: ToxicInput): Promise<Toxic> {
    return this.registry.addToxic(name, toxic);
  }
  updateToxic(name: string, toxicName: string, change: ToxicChangeInput): Promise<Toxic> {
    return this.registry.updateToxic(name, toxicName, change);
  }
  removeToxic(name: string, toxicName: string): Promise<void> {
    return this.registry.removeToxic(name, toxicName);
  }

  /** The bound address of a relay, e.g. to connect a client to it. */
  address(name: string): HostPort {
    return this.registry.address(name);
  }

  /** Stops the API and every relay (their connections are ended), then closes the recordings. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      await this.api?.close();
      await this.registry.close();
      await this.recorder?.close();
      await this.#ownEngine?.close();
    })();
    return this.#closing;
  }
}

/** Opens the configured relays (and the API); rejects, closing what it opened, if one cannot listen. */
export async function createRelay(options: RelayOptions = {}): Promise<Relay> {
  const relay = new Relay(options);
  try {
    const configs = options.relays ?? [];
    if (configs.length > 0) await relay.populate(configs.map(({ toxics: _toxics, ...proxy }) => proxy));
    for (const config of configs) for (const toxic of config.toxics ?? []) await relay.addToxic(config.name, toxic);
    if (options.api) {
      relay.api = await startRelayApi(relay.registry, { host: options.api.host, port: options.api.port, open: options.open, logger: options.logger });
    }
  } catch (err) {
    await relay.close();
    throw err;
  }
  options.logger?.info(
    {
      relays: Object.values(relay.list()).map((r) => ({ name: r.name, listen: r.listen, upstream: r.upstream, toxics: r.toxics.map((t) => t.name) })),
      api: relay.api ? formatHostPort(relay.api.address) : undefined,
      record: options.record?.path,
      seed: relay.seed,
      engine: relay.engine,
      spliceOff: relay.engine === 'js' ? (options.engine === 'js' ? 'engine js' : engines().splice.reason) : undefined,
    },
    'relay listening',
  );
  return relay;
}
