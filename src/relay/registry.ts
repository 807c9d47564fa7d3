// The named relays and their toxics, with Toxiproxy's semantics. The registry decides what should
// be listening and with which toxics; the data path, reached only through the injected
// OpenRelayListener, does the listening. Every change runs in one queue, so two requests never
// interleave their awaits (a create racing a delete of the same name, a toxic added mid-move).
import { formatHostPort, type HostPort } from '../net/host-port.js';
import type { Logger } from '../logger.js';
import { badRequest, listenFailed, PopulateError, proxyExists, proxyNotFound, RelayError, toxicExists, toxicNotFound } from './control-errors.js';
import {
  applyToxicChange,
  parseNewToxic,
  parsePopulate,
  parseRelayChange,
  parseRelaySpec,
  type RelayChangeInput,
  type RelayInput,
  type RelaySpec,
  type ToxicChangeInput,
} from './control-input.js';
import { toxicJson, type Toxic } from './toxics.js';
import type { OpenRelayListener, RelayListener } from './listener.js';
import type { RelayView } from './view.js';

export interface RelayRegistryOptions {
  /** The data path. */
  openListener: OpenRelayListener;
  /** Allow listen addresses beyond loopback. Default false. */
  open?: boolean;
  /**
   * Refuse what Toxiproxy lets through (unknown fields, renames, toxicity outside 0..1, ...) and
   * make populate all or nothing. Default false: Toxiproxy's clients rely on its leniency.
   */
  strictApi?: boolean;
  logger?: Logger;
}

interface Relay {
  readonly name: string;
  /** Where it listens or will: the bound address once opened, so a re-enable gets the same port. */
  listen: HostPort;
  /** The listen address as last asked for (port 0 stays 0), for populate's "same config" test. */
  requestedListen: HostPort;
  /** What `listen` reports: the text given, until a listener replaces it with the bound address. */
  shownListen: string;
  upstream: HostPort;
  /** Insertion order; Toxiproxy keeps one chain per direction in the order toxics were added. */
  toxics: Toxic[];
  /** Present exactly while the relay is enabled. */
  listener?: RelayListener;
}

const sameAddress = (a: HostPort, b: HostPort) => a.host === b.host && a.port === b.port;

/** Upstream-direction toxics first, then downstream, each in the order added: Toxiproxy's listing. */
const ordered = (toxics: readonly Toxic[]): Toxic[] => [
  ...toxics.filter((t) => t.stream === 'upstream'),
  ...toxics.filter((t) => t.stream === 'downstream'),
];

function view(relay: Relay): RelayView {
  return {
    name: relay.name,
    listen: relay.shownListen,
    upstream: formatHostPort(relay.upstream),
    enabled: relay.listener !== undefined,
    toxics: ordered(relay.toxics).map(toxicJson),
  };
}

export class RelayRegistry {
  readonly open: boolean;
  readonly strict: boolean;
  private readonly openListener: OpenRelayListener;
  private readonly logger?: Logger;
  private readonly relays = new Map<string, Relay>();
  private queue: Promise<unknown> = Promise.resolve();
  private closed = false;
  private closing?: Promise<void>;

  constructor(options: RelayRegistryOptions) {
    this.openListener = options.openListener;
    this.open = options.open ?? false;
    this.strict = options.strictApi ?? false;
    this.logger = options.logger;
  }

  /** Every relay, keyed by name: the shape of Toxiproxy's GET /proxies. */
  list(): Record<string, RelayView> {
    return Object.fromEntries([...this.relays.values()].map((relay) => [relay.name, view(relay)]));
  }

  get(name: string): RelayView {
    return view(this.relay(name));
  }

  /** Where the relay listens, or will when enabled: the bound address once it has listened. */
  address(name: string): HostPort {
    return { ...this.relay(name).listen };
  }

  toxics(name: string): Toxic[] {
    return view(this.relay(name)).toxics;
  }

  toxic(name: string, toxicName: string): Toxic {
    return toxicJson(this.toxicOf(this.relay(name), toxicName));
  }

  /** POST /proxies. Enabled unless `enabled: false`; listens before it is added. */
  async create(input: RelayInput): Promise<RelayView> {
    const spec = parseRelaySpec(input, this.open, this.strict);
    return this.serial(async () => {
      if (this.relays.has(spec.name)) throw proxyExists();
      const relay = await this.build(spec);
      this.relays.set(relay.name, relay);
      return view(relay);
    });
  }

  /**
   * POST /proxies/{name}. A new listen address closes the listener (ending its connections) and
   * opens one there; a new upstream applies to connections accepted from now on, and open ones go
   * on. On a failed move the relay goes back to where it was.
   */
  update(name: string, input: RelayChangeInput): Promise<RelayView> {
    return this.serial(async () => {
      const relay = this.relay(name);
      const change = parseRelayChange(input, name, this.open, this.strict);
      const upstream = change.upstream ?? relay.upstream;
      const enabled = change.enabled ?? relay.listener !== undefined;
      const moved = change.listen !== undefined && !sameAddress(change.listen, relay.listen);
      if (!enabled) {
        await this.stop(relay);
      } else if (!relay.listener || moved) {
        await this.move(relay, change.listen ?? relay.listen, upstream);
      } else if (!sameAddress(upstream, relay.upstream)) {
        relay.listener.setUpstream(upstream);
      }
      relay.upstream = upstream;
      if (change.listen) {
        relay.requestedListen = change.listen;
        if (!relay.listener) {
          relay.listen = change.listen;
          relay.shownListen = change.listenText ?? formatHostPort(change.listen);
        }
      }
      return view(relay);
    });
  }

  /** DELETE /proxies/{name}: stops listening and ends its connections. */
  remove(name: string): Promise<void> {
    return this.serial(async () => {
      const relay = this.relay(name);
      this.relays.delete(name);
      await this.stop(relay);
    });
  }

  /**
   * POST /populate. A proxy whose listen and upstream match an existing one of the same name is
   * kept as it is (toxics and connections too; only `enabled` is brought to what was asked); one
   * that differs replaces it; new names are added; proxies not named are left alone. All inputs are
   * checked before anything changes. If one cannot listen, the call stops there and rejects with a
   * PopulateError listing the proxies it did apply, which stay, as Toxiproxy does; when strict,
   * what the call did is undone and the list is empty.
   */
  async populate(input: RelayInput[]): Promise<RelayView[]> {
    const specs = parsePopulate(input, this.open, this.strict);
    return this.serial(async () => {
      const undo: (() => Promise<void>)[] = [];
      const applied: RelayView[] = [];
      try {
        for (const spec of specs) {
          await this.apply(spec, undo);
          applied.push(view(this.relay(spec.name)));
        }
      } catch (err) {
        if (this.strict) {
          for (const step of undo.reverse()) await step().catch((e: unknown) => this.logger?.warn({ err: e }, 'relay: populate rollback step failed'));
        }
        if (!(err instanceof RelayError)) throw err;
        throw new PopulateError(err, this.strict ? [] : applied);
      }
      return applied;
    });
  }

  /**
   * A config file read again (SIGHUP): every relay in `configs` brought to what it says, and the
   * relays named in `dropped` (in the file before, not now) removed. Everything is parsed before
   * anything changes. A relay that keeps its listen address keeps its listener and connections: a
   * new upstream applies to connections accepted from now on, and its toxic list is replaced on
   * open connections too, without dropping them. A new listen address, or a dropped relay, ends
   * that relay's connections, as Toxiproxy's update and delete do. Relays made over the API and
   * not named here are left alone.
   */
  reconcile(configs: ReadonlyArray<RelayInput & { toxics?: unknown[] }>, dropped: readonly string[]): Promise<void> {
    const seen = new Set<string>();
    const wanted = configs.map(({ toxics, ...input }, i) => {
      const spec = parseRelaySpec(input, this.open, this.strict, ` at proxy ${i + 1}`);
      if (seen.has(spec.name)) throw badRequest(`duplicate proxy name "${spec.name}" at proxy ${i + 1}`);
      seen.add(spec.name);
      const parsed = (toxics ?? []).map((toxic) => parseNewToxic(toxic, this.strict));
      const names = new Set<string>();
      for (const toxic of parsed) {
        if (names.has(toxic.name)) throw badRequest(`duplicate toxic name "${toxic.name}" at proxy ${i + 1}`);
        names.add(toxic.name);
      }
      return { spec, toxics: parsed };
    });
    return this.serial(async () => {
      for (const { spec, toxics } of wanted) {
        const existing = this.relays.get(spec.name);
        if (!existing) {
          const relay = await this.build(spec);
          this.relays.set(relay.name, relay);
          this.setToxics(relay, toxics);
          continue;
        }
        const moved = !sameAddress(existing.requestedListen, spec.listen) && !sameAddress(existing.listen, spec.listen);
        if (!spec.enabled) await this.stop(existing);
        else if (!existing.listener || moved) await this.move(existing, spec.listen, spec.upstream);
        else if (!sameAddress(existing.upstream, spec.upstream)) existing.listener.setUpstream(spec.upstream);
        existing.upstream = spec.upstream;
        if (moved) existing.requestedListen = spec.listen;
        // Unchanged toxics stay the same objects: their state on open connections goes on.
        const same = JSON.stringify(existing.toxics.map(toxicJson)) === JSON.stringify(toxics.map(toxicJson));
        if (!same) this.setToxics(existing, toxics);
      }
      for (const name of dropped) {
        const relay = this.relays.get(name);
        if (!relay || seen.has(name)) continue;
        this.relays.delete(name);
        await this.stop(relay);
      }
    });
  }

  /**
   * POST /reset: every relay enabled, every toxic removed. Goes through all relays even when one
   * cannot listen again, then reports the first such failure.
   */
  reset(): Promise<void> {
    return this.serial(async () => {
      let failure: unknown;
      for (const relay of this.relays.values()) {
        relay.listener?.setToxics([]);
        relay.toxics = [];
        if (relay.listener) continue;
        try {
          await this.start(relay);
        } catch (err) {
          failure ??= err;
        }
      }
      if (failure) throw failure;
    });
  }

  /** POST /proxies/{name}/toxics. Applies to open connections too. */
  addToxic(name: string, input: unknown): Promise<Toxic> {
    return this.serial(async () => {
      const relay = this.relay(name);
      const toxic = parseNewToxic(input, this.strict);
      if (relay.toxics.some((t) => t.name === toxic.name)) throw toxicExists();
      this.setToxics(relay, [...relay.toxics, toxic]);
      return toxicJson(toxic);
    });
  }

  /** POST/PATCH /proxies/{name}/toxics/{toxic}: merges attributes, replaces the toxic in place. */
  updateToxic(name: string, toxicName: string, input: ToxicChangeInput): Promise<Toxic> {
    return this.serial(async () => {
      const relay = this.relay(name);
      const updated = applyToxicChange(this.toxicOf(relay, toxicName), input, this.strict);
      this.setToxics(
        relay,
        relay.toxics.map((t) => (t.name === toxicName ? updated : t)),
      );
      return toxicJson(updated);
    });
  }

  /** DELETE /proxies/{name}/toxics/{toxic}: what the toxic holds goes on at once. */
  removeToxic(name: string, toxicName: string): Promise<void> {
    return this.serial(async () => {
      const relay = this.relay(name);
      this.toxicOf(relay, toxicName);
      this.setToxics(
        relay,
        relay.toxics.filter((t) => t.name !== toxicName),
      );
    });
  }

  /** Stops every listener; the registry refuses changes afterwards. Safe to call twice. */
  close(): Promise<void> {
    this.closing ??= this.serial(async () => {
      this.closed = true;
      await Promise.all([...this.relays.values()].map((relay) => this.stop(relay)));
    });
    return this.closing;
  }

  private serial<T>(task: () => Promise<T>): Promise<T> {
    const run = this.queue.then(() => {
      if (this.closed) throw new RelayError('ERR_RELAY_CLOSED', 'the relay is shutting down');
      return task();
    });
    this.queue = run.catch(() => {});
    return run;
  }

  private relay(name: string): Relay {
    const relay = this.relays.get(name);
    if (!relay) throw proxyNotFound();
    return relay;
  }

  private toxicOf(relay: Relay, toxicName: string): Toxic {
    const toxic = relay.toxics.find((t) => t.name === toxicName);
    if (!toxic) throw toxicNotFound();
    return toxic;
  }

  // The data path is told first, so a listener that refuses the list leaves the registry unchanged.
  private setToxics(relay: Relay, toxics: Toxic[]): void {
    relay.listener?.setToxics(ordered(toxics));
    relay.toxics = toxics;
  }

  private async build(spec: RelaySpec): Promise<Relay> {
    const relay: Relay = { name: spec.name, listen: spec.listen, requestedListen: spec.listen, shownListen: spec.listenText, upstream: spec.upstream, toxics: [] };
    if (spec.enabled) await this.start(relay);
    return relay;
  }

  private async start(relay: Relay, listen = relay.listen, upstream = relay.upstream): Promise<void> {
    let listener: RelayListener;
    try {
      listener = await this.openListener({ name: relay.name, listen, upstream }, ordered(relay.toxics));
    } catch (err) {
      this.logger?.warn({ relay: relay.name, listen: formatHostPort(listen), err }, 'relay: cannot listen');
      throw listenFailed(listen, err);
    }
    relay.listener = listener;
    relay.listen = listener.address;
    relay.shownListen = formatHostPort(listener.address);
    this.logger?.info({ relay: relay.name, listen: formatHostPort(relay.listen), upstream: formatHostPort(upstream) }, 'relay: listening');
  }

  private async stop(relay: Relay): Promise<void> {
    const listener = relay.listener;
    if (!listener) return;
    relay.listener = undefined;
    try {
      await listener.close();
    } catch (err) {
      this.logger?.warn({ relay: relay.name, err }, 'relay: listener close failed');
    }
    this.logger?.info({ relay: relay.name }, 'relay: stopped');
  }

  private async move(relay: Relay, listen: HostPort, upstream: HostPort): Promise<void> {
    const wasListening = relay.listener !== undefined;
    await this.stop(relay);
    try {
      await this.start(relay, listen, upstream);
    } catch (err) {
      if (wasListening) await this.start(relay).catch((e: unknown) => this.logger?.warn({ relay: relay.name, err: e }, 'relay: could not listen again at the old address'));
      throw err;
    }
  }

  private async apply(spec: RelaySpec, undo: (() => Promise<void>)[]): Promise<void> {
    const existing = this.relays.get(spec.name);
    const same =
      existing &&
      sameAddress(existing.upstream, spec.upstream) &&
      (sameAddress(existing.requestedListen, spec.listen) || sameAddress(existing.listen, spec.listen));
    if (existing && same) {
      const wasEnabled = existing.listener !== undefined;
      if (wasEnabled === spec.enabled) return;
      await (spec.enabled ? this.start(existing) : this.stop(existing));
      undo.push(() => (wasEnabled ? this.start(existing) : this.stop(existing)));
      return;
    }
    if (existing) {
      const wasEnabled = existing.listener !== undefined;
      // It stays under its name, stopped, until the new one listens: a replacement that cannot
      // listen leaves it there disabled, as Toxiproxy does.
      await this.stop(existing);
      undo.push(async () => {
        this.relays.set(existing.name, existing);
        if (wasEnabled) await this.start(existing);
      });
    }
    const relay = await this.build(spec);
    this.relays.set(relay.name, relay);
    undo.push(async () => {
      this.relays.delete(relay.name);
      await this.stop(relay);
    });
  }
}
