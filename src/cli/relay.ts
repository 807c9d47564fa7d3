// `splicer relay`: the command line of the recording, fault-injecting TCP relay.
import { Command, InvalidArgumentError, Option } from 'commander';
import { readFileSync } from 'node:fs';
import { formatHostPort, type HostPort } from '../net/host-port.js';
import { acceptProxyProtocolOption, sendProxyProtocolOption } from './proxy-protocol-flags.js';
import type { ProxyProtocolVersion } from '../net/proxy-header.js';
import { collect, commandEngine, engineOption, hostPortArg, hostPortListArg, integerArg, logLevelOption, onStopSignal, secondsArg, idleMs, threadsOption, idleTimeoutOption, graceOption } from './flags.js';
import type { LOG_LEVELS } from '../logger.js';
import { onReloadSignal } from '../ops/reload.js';
import { serviceNotifier } from '../ops/systemd-notify.js';
import { commandLogger, reusePortListenFd, superviseWorkers, workerListening, workerRole, workersOption, workersUnavailable } from './workers.js';
import { drain } from '../net/drain.js';
import type { EngineChoice } from '../engine/contract.js';
import { DEFAULT_API_PORT } from '../relay/api.js';
import { createRelay, type RelayConfig } from '../relay/create.js';
import type { RecordLegs } from '../relay/recording.js';
import { parseToxicSpec } from '../relay/toxic-spec.js';
import { ToxicError, type Toxic } from '../relay/toxics.js';
import { checkMetricsFlags, metricsOption, startMetrics } from './metrics.js';

interface RelayCliOptions {
  listen?: HostPort[];
  to?: HostPort[];
  name?: string[];
  config?: string;
  toxic?: Toxic[];
  record?: string;
  recordLegs: RecordLegs;
  recordBuffer: number;
  seed?: number;
  api?: HostPort | true;
  open?: boolean;
  strictApi?: boolean;
  engine: EngineChoice;
  threads: number;
  connectTimeout: number;
  idleTimeout: number;
  acceptProxyProtocol: boolean;
  proxyHeaderTimeout: number;
  sendProxyProtocol?: ProxyProtocolVersion;
  grace: number;
  workers: number;
  metrics?: HostPort;
  logLevel: (typeof LOG_LEVELS)[number];
}

function toxicArg(value: string, previous: Toxic[] | undefined): Toxic[] {
  try {
    return [...(previous ?? []), parseToxicSpec(value)];
  } catch (err) {
    if (err instanceof ToxicError) throw new InvalidArgumentError(`--toxic ${value}: ${err.message}`);
    throw err;
  }
}

function seedArg(value: string): number {
  const seed = Number(value);
  if (!/^\d+$/.test(value.trim()) || !Number.isSafeInteger(seed)) throw new InvalidArgumentError(`--seed must be a whole number, got "${value}"`);
  return seed;
}

/** A Toxiproxy config file: a JSON array of {name, listen, upstream, enabled?, toxics?}. */
function readConfig(path: string): RelayConfig[] {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new Error(`--config ${path}: ${(err as Error).message}`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new Error(`--config ${path}: not valid JSON: ${(err as Error).message}`);
  }
  if (!Array.isArray(json)) throw new Error(`--config ${path}: expected a JSON array of relays, as Toxiproxy's -config file`);
  return json as RelayConfig[];
}

function relaysFrom(options: RelayCliOptions): RelayConfig[] {
  const listen = options.listen ?? [];
  const to = options.to ?? [];
  if (listen.length !== to.length) {
    throw new Error(`each --listen needs a --to (got ${listen.length} --listen and ${to.length} --to); they pair up in order`);
  }
  const names = options.name ?? [];
  if (names.length > listen.length) throw new Error(`--name given ${names.length} times for ${listen.length} --listen/--to pairs`);
  const toxics = options.toxic ?? [];
  const fromFlags = listen.map((address, i) => ({
    name: names[i] ?? `relay${i + 1}`,
    listen: formatHostPort(address),
    upstream: formatHostPort(to[i]!),
    toxics,
  }));
  const fromFile = options.config ? readConfig(options.config) : [];
  return [...fromFile, ...fromFlags];
}

async function runRelay(options: RelayCliOptions): Promise<void> {
  const role = workerRole();
  const logger = commandLogger(options.logLevel, role);
  const relays = relaysFrom(options);
  if (relays.length === 0 && !options.api) {
    throw new Error('nothing to relay: give --listen HOST:PORT --to HOST:PORT, --config FILE, or --api to create relays over HTTP');
  }
  checkMetricsFlags(options);
  if (options.workers > 1) {
    if (options.api) {
      throw new Error('--workers: the relay API holds state (its relays and toxics, changed live), so a relay with --api runs as one process; drop --workers or --api');
    }
    if (options.record) throw new Error('--workers: a recording is written by one process; drop --workers or --record');
  }
  if (options.workers > 1 && !role) {
    const unavailable = workersUnavailable();
    if (unavailable) throw new Error(unavailable);
    return superviseWorkers({ workers: options.workers, grace: options.grace, logLevel: options.logLevel, metrics: options, validate: () => void (options.config && readConfig(options.config)) });
  }
  // In a worker: every relay on the address worker 0 bound (its port 0 made a real port).
  if (role?.listen) relays.forEach((relay, i) => (relay.listen = role.listen![i] ? formatHostPort(role.listen![i]!) : relay.listen));
  const api = options.api === true ? { host: '127.0.0.1', port: DEFAULT_API_PORT } : options.api;
  const { spliceEngine } = commandEngine(options.engine, { threads: options.threads, recordBufferBytes: options.recordBuffer * 2 ** 20 });
  // Set before createRelay logs its startup line: whoever sees it may stop the process at once.
  // Relays and the API stay up through the grace; relay.close() then ends what is left.
  let relay: Awaited<ReturnType<typeof createRelay>> | undefined;
  const stoppable = {
    get activeConnections() {
      return relay?.activeConnections ?? 0;
    },
    async close(graceMs: number) {
      const running = relay;
      if (!running) return;
      await drain(() => running.activeConnections, graceMs, (changed) => {
        running.on('connection', changed);
        return () => running.off('connection', changed);
      });
      await running.close();
    },
  };
  const notifier = serviceNotifier(logger);
  onStopSignal(logger, options.grace, stoppable, spliceEngine, notifier);
  // SIGHUP: the --config file read again and its relays and toxics brought to what it says.
  let fromFile = options.config ? readConfig(options.config) : [];
  onReloadSignal(logger, notifier, async () => {
    if (!options.config) return { changed: [], needsRestart: [] };
    const next = readConfig(options.config);
    const running = relay;
    if (!running) throw new Error('the relays are still starting');
    // A worker's listeners are its SO_REUSEPORT share of the group's addresses: they stay where they are.
    const configs = role ? next.map((config) => (running.list()[config.name] ? { ...config, listen: formatHostPort(running.address(config.name)) } : config)) : next;
    const dropped = fromFile.map((config) => config.name).filter((name) => !next.some((config) => config.name === name));
    await running.reconcile(configs, dropped);
    fromFile = next;
    return { changed: [options.config], needsRestart: [] };
  });
  const metrics = await startMetrics(
    options,
    {
      service: 'relay',
      activeConnections: () => relay?.activeConnections ?? 0,
      spliceEngine,
      gauges: [
        {
          name: 'splicer_relay_toxics_active',
          help: 'Toxics set on the relays now, all relays together',
          read: () => Object.values(relay?.list() ?? {}).reduce((sum, view) => sum + view.toxics.length, 0),
        },
      ],
    },
    logger,
    role !== undefined,
  );
  relay = await createRelay({
    relays,
    api,
    record: options.record ? { path: options.record, legs: options.recordLegs, maxQueuedBytes: options.recordBuffer * 2 ** 20 } : undefined,
    seed: options.seed,
    engine: options.engine,
    spliceEngine,
    listenFd: role ? reusePortListenFd() : undefined,
    open: options.open,
    strictApi: options.strictApi,
    connectTimeout: options.connectTimeout * 1000,
    idleTimeout: idleMs(options.idleTimeout),
    acceptProxyProtocol: options.acceptProxyProtocol,
    proxyHeaderTimeout: options.proxyHeaderTimeout * 1000,
    sendProxyProtocol: options.sendProxyProtocol,
    logger,
  });
  if (metrics) relay.on('connection', (record) => metrics.connectionEnded({ outcome: record.reason, durationMs: record.durationMs }));
  notifier.ready();
  if (role) workerListening(relays.map((config) => relay.address(config.name)), logger);
}

export function relayCommand(): Command {
  return new Command('relay')
    .description(
      'TCP relay that records traffic as pcap and injects faults, drivable by Toxiproxy clients. ' +
        'Unfaulted connections are spliced; a toxic (added at start or live over --api) moves them to user space.',
    )
    .option('--listen <host:port>', 'address a relay accepts on; repeatable, each paired with the --to in the same position; :PORT means 127.0.0.1', hostPortListArg('127.0.0.1', true))
    .option('--to <host:port>', 'upstream of the --listen in the same position; repeatable', hostPortListArg())
    .option('--name <name>', 'name of the relay in the same position (default relay1, relay2...), as the API knows it; repeatable', collect)
    .option('--config <file>', "relays from a JSON file in Toxiproxy's -config format: [{name, listen, upstream, enabled?, toxics?}]; SIGHUP reads it again and applies the differences")
    .option(
      '--toxic <spec>',
      'a fault on every --listen relay, repeatable, applied in order: TYPE[@upstream|@downstream][:KEY=VALUE,...] or Toxiproxy JSON. ' +
        'Types: latency (latency, jitter ms), bandwidth (rate KB/s), slicer (average_size, size_variation B, delay µs), ' +
        'limit_data (bytes), timeout (timeout ms; 0 = never), reset_peer (timeout ms), slow_close (delay ms), ' +
        'bitflip (rate per byte), stall (after B, duration ms), noop (passes everything). Envelope keys: name, toxicity (0..1, per connection), perChunk=true (roll per chunk). ' +
        'Default stream: downstream (server to client)',
      toxicArg,
    )
    .option('--record <path>', 'record every connection as pcap: a FILE.pcap for all, or a DIR/ for one file per connection')
    .addOption(new Option('--record-legs <legs>', 'which TCP connections to record: client (client to relay), server (relay to upstream) or both').choices(['both', 'client', 'server']).default('both'))
    .option('--record-buffer <MiB>', 'recorded bytes that may wait for the disk; past that a connection stops being recorded (its traffic never waits)', integerArg('--record-buffer', 1, 1 << 20), 64)
    .option('--seed <n>', 'seed of every random decision (toxicity rolls, jitter, bit flips): the same seed and traffic give the same faults; logged when not given', seedArg)
    .option('--api [host:port]', `serve Toxiproxy's HTTP API (default 127.0.0.1:${DEFAULT_API_PORT} when given without a value)`, hostPortArg('127.0.0.1'))
    .option('--open', 'allow --listen, --config, --api and --metrics addresses beyond loopback')
    .option(
      '--strict-api',
      "refuse what Toxiproxy's API lets through: unknown fields and attributes, toxicity outside 0..1, a stream not in lower case, " +
        'renaming a proxy or retyping a toxic, a name twice in one populate; and undo a populate that fails part way',
    )
    .addOption(engineOption())
    .addOption(threadsOption())
    .option('--connect-timeout <seconds>', 'reset the client when the upstream has not accepted by then', secondsArg('--connect-timeout'), 10)
    .addOption(idleTimeoutOption('connection'))
    .addOption(acceptProxyProtocolOption('--proxy-header-timeout'))
    .option('--proxy-header-timeout <seconds>', 'with --accept-proxy-protocol: close a connection whose PROXY header has not come by then', secondsArg('--proxy-header-timeout'), 10)
    .addOption(sendProxyProtocolOption(' (ahead of the toxics)'))
    .addOption(graceOption('connection'))
    .addOption(workersOption('; not with --api (its relays and toxics live in one process) or --record'))
    .addOption(metricsOption())
    .addOption(logLevelOption())
    .addHelpText(
      'after',
      `
Examples:
  splicer relay --listen :6380 --to 127.0.0.1:6379 --toxic latency:latency=100,jitter=20
  splicer relay --listen :8443 --to 10.0.0.5:443 --record /tmp/caps/ --seed 42
  splicer relay --api                      # then drive it with any Toxiproxy client
  curl -X POST localhost:8474/proxies -d '{"name":"redis","listen":"127.0.0.1:26379","upstream":"127.0.0.1:6379"}'
  curl -X POST localhost:8474/proxies/redis/toxics -d '{"type":"bitflip","stream":"downstream","attributes":{"rate":0.0001}}'`,
    )
    .action(runRelay);
}
