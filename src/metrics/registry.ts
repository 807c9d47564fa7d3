// One process's Prometheus registry: prom-client's default process metrics and splicer's series,
// each labelled with the service the process runs.
//
// The hot path pays little: a connection that ends adds to plain counts (a Map entry per outcome)
// and one histogram observation; everything else (connections open, bytes moved, the splice
// engine's counters, sessions, toxics) is read when Prometheus scrapes, through collect().
// Bytes are the engines' live counters, so a transfer that runs for hours shows while it runs.
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { SpliceEngine } from '../engine/splice/engine.js';
import { jsEngineBytes } from '../engine/js-engine.js';
import { observeUpstreamConnects } from '../net/connect-observer.js';
import { configReloads } from './reloads.js';

export type ServiceName = 'proxy' | 'forward' | 'relay' | 'tunnel';

/** What the metrics read from a service when scraped. */
export interface MetricsSource {
  service: ServiceName;
  /** Another constant label of every series (the tunnel's `role`: server or client). */
  labels?: Record<string, string>;
  /** Client connections (streams, for the tunnel) open now. */
  activeConnections(): number;
  /** The command's splice engine, whose live counters are read; none on the JS engine. */
  spliceEngine?: SpliceEngine;
  /** Extra gauges read at scrape time: the tunnel's sessions and tunnels up, the relay's toxics. */
  gauges?: ScrapedGauge[];
}

export interface ScrapedGauge {
  name: string;
  help: string;
  read(): number;
}

/** A connection's end, as the metrics count it. */
export interface EndedConnection {
  /** The record's outcome or reason: eof, reset, denied, ECONNREFUSED... */
  outcome: string;
  durationMs: number;
  /** Why its handshake failed, when it did (auth, denied, bad_request, timeout). */
  handshakeFailure?: HandshakeFailure;
}

export type HandshakeFailure = 'auth' | 'denied' | 'bad_request' | 'timeout';

/** Connection lengths: from a refused handshake (ms) to a day-long tunnel. */
const DURATION_BUCKETS = [0.001, 0.005, 0.025, 0.1, 0.5, 1, 5, 30, 120, 600, 3600, 86400];
/** Upstream connects: loopback (tens of µs) to a timeout (10 s by default). */
const CONNECT_BUCKETS = [0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10];

/** Counts kept as plain numbers and handed to prom-client at scrape time. */
class Tally {
  readonly #counts = new Map<string, number>();
  add(key: string, by = 1): void {
    this.#counts.set(key, (this.#counts.get(key) ?? 0) + by);
  }
  entries(): IterableIterator<[string, number]> {
    return this.#counts.entries();
  }
}

/** A counter whose values are set from `read` at each scrape (prom-client counters have no set()). */
function scrapedCounter<L extends string>(registry: Registry, name: string, help: string, labelNames: readonly L[], read: () => Iterable<[Partial<Record<L, string>>, number]>): void {
  new Counter<L>({
    name,
    help,
    labelNames,
    registers: [registry],
    collect() {
      this.reset();
      for (const [labels, value] of read()) this.inc(labels, value);
    },
  });
}

export class ServiceMetrics {
  readonly registry = new Registry();
  readonly #outcomes = new Tally();
  readonly #handshakeFailures = new Tally();
  readonly #connectErrors = new Tally();
  readonly #duration: Histogram;
  readonly #connectDuration: Histogram;

  constructor(source: MetricsSource) {
    const registry = this.registry;
    registry.setDefaultLabels({ service: source.service, ...source.labels });
    collectDefaultMetrics({ register: registry });
    // Gauges whose names end in _total, which promtool's lint rejects; the same counts by type stay
    // (nodejs_active_handles, nodejs_active_requests, nodejs_active_resources).
    for (const name of ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total']) registry.removeSingleMetric(name);

    scrapedCounter(registry, 'splicer_connections_total', 'Client connections that ended, by outcome (eof, reset, timeout, denied, auth-failed, an upstream errno...)', ['outcome'], () =>
      mapLabels(this.#outcomes, 'outcome'),
    );
    new Gauge({ name: 'splicer_connections_active', help: 'Client connections open now', registers: [registry], collect() { this.set(source.activeConnections()); } });
    const engine = source.spliceEngine;
    scrapedCounter(registry, 'splicer_bytes_total', 'Bytes forwarded, open connections included: up is client to upstream, down upstream to client', ['direction'], () => {
      const js = jsEngineBytes();
      const spliced = engine && !engine.closed ? engine.stats() : { bytesAtoB: 0, bytesBtoA: 0 };
      return [
        [{ direction: 'up' }, js.aToB + spliced.bytesAtoB],
        [{ direction: 'down' }, js.bToA + spliced.bytesBtoA],
      ];
    });
    this.#duration = new Histogram({ name: 'splicer_connection_duration_seconds', help: 'How long client connections lasted, accept to close', buckets: DURATION_BUCKETS, registers: [registry] });
    this.#connectDuration = new Histogram({ name: 'splicer_upstream_connect_duration_seconds', help: 'Upstream connects that succeeded: name resolution and TCP connect', buckets: CONNECT_BUCKETS, registers: [registry] });
    scrapedCounter(registry, 'splicer_upstream_connect_errors_total', 'Upstream connects that failed, by errno name', ['code'], () => mapLabels(this.#connectErrors, 'code'));
    scrapedCounter(registry, 'splicer_handshake_failures_total', 'Handshakes that failed, by reason (auth, denied, bad_request, timeout)', ['reason'], () =>
      mapLabels(this.#handshakeFailures, 'reason'),
    );
    scrapedCounter(registry, 'splicer_config_reloads_total', 'Configuration reloads, by result (success, failure)', ['result'], () => mapLabels(configReloads(), 'result'));

    const stats = () => (engine && !engine.closed ? engine.stats() : undefined);
    new Gauge({ name: 'splicer_splice_pairs', help: 'Pairs the splice engine moves now', registers: [registry], collect() { this.set(stats()?.pairs ?? 0); } });
    new Gauge({ name: 'splicer_splice_pipes_in_use', help: "Pipes of the splice engine's pools holding bytes in flight", registers: [registry], collect() { this.set(stats()?.pipesInUse ?? 0); } });
    scrapedCounter(registry, 'splicer_splice_rw_fallbacks_total', 'Pairs that fell back to read/write (no pipe to be had, or splice refused the socket)', [], () => [[{}, stats()?.readWriteFallbacks ?? 0]]);
    for (const gauge of source.gauges ?? []) {
      new Gauge({ name: gauge.name, help: gauge.help, registers: [registry], collect() { this.set(gauge.read()); } });
    }

    observeUpstreamConnects({
      connected: (seconds) => this.#connectDuration.observe(seconds),
      failed: (code) => this.#connectErrors.add(code),
    });
  }

  /** Counts a connection that ended (its record). */
  connectionEnded(ended: EndedConnection): void {
    this.#outcomes.add(ended.outcome);
    this.#duration.observe(ended.durationMs / 1000);
    if (ended.handshakeFailure) this.#handshakeFailures.add(ended.handshakeFailure);
  }

  /** A handshake that failed with no connection record of its own (the tunnel's rejected logins). */
  handshakeFailed(reason: HandshakeFailure): void {
    this.#handshakeFailures.add(reason);
  }

  /** Prometheus' text format. */
  text(): Promise<string> {
    return this.registry.metrics();
  }

  /** Stops observing upstream connects (the process-wide hook). */
  close(): void {
    observeUpstreamConnects(undefined);
  }
}

function* mapLabels<L extends string>(tally: { entries(): Iterable<[string, number]> }, label: L): Iterable<[Partial<Record<L, string>>, number]> {
  for (const [value, count] of tally.entries()) yield [{ [label]: value } as Partial<Record<L, string>>, count];
}
