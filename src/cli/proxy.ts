// `splicer proxy`: SOCKS4/4a/5 and HTTP on one port.
import { Command, InvalidArgumentError } from 'commander';
import { acceptProxyProtocolOption } from './proxy-protocol-flags.js';
import { acceptOption, collect, commandEngine, engineOption, integerArg, logLevelOption, onStopSignal, secondsArg, idleMs, threadsOption, idleTimeoutOption, graceOption } from './flags.js';
import { formatHostPort, type HostPort } from '../net/host-port.js';
import type { LOG_LEVELS, Logger } from '../logger.js';
import { configOption, configuredOptions } from './config-file.js';
import { reloadOnSignal } from './reload.js';
import { serviceNotifier } from '../ops/systemd-notify.js';
import { type WorkerRole, commandLogger, reusePortListenFd, superviseWorkers, workerListening, workerRole, workersOption, workersUnavailable } from './workers.js';
import type { EngineChoice } from '../engine/contract.js';
import { Credentials, CredentialsError } from '../proxy/auth.js';
import { parseRule, RuleError, type Rule } from '../proxy/rules.js';
import { createProxyServer, openProxyRisk } from '../proxy/server.js';
import { DEFAULT_LIMITS, DEFAULT_TIMEOUTS, type AcceptPath } from '../proxy/options.js';
import { checkMetricsFlags, metricsOption, startMetrics } from './metrics.js';
import { proxyHandshakeFailure } from '../metrics/outcomes.js';
import { formatMuxAddress } from '../proxy/mux-address.js';
import { serverTlsFrom } from './tls-flags.js';
import { addProxyMuxOptions, muxSessionOptions, PROXY_MUX_RESTART_ONLY, proxyListenArg, splitListen, type ProxyListenAddress, type ProxyMuxCliOptions } from './proxy-mux.js';

interface ProxyCliOptions extends ProxyMuxCliOptions {
  listen?: ProxyListenAddress[];
  auth?: string[];
  users?: string[];
  allowEmptyCredentials?: boolean;
  allow?: Rule[];
  deny?: Rule[];
  config?: string;
  open?: boolean;
  handshakeTimeout: number;
  connectTimeout: number;
  idleTimeout: number;
  maxConnections: number;
  maxPerClient: number;
  udpAdvertise?: string;
  engine: EngineChoice;
  accept: AcceptPath;
  acceptProxyProtocol: boolean;
  threads: number;
  grace: number;
  workers: number;
  metrics?: HostPort;
  logLevel: (typeof LOG_LEVELS)[number];
}

function credentialsFrom(options: ProxyCliOptions): Credentials | undefined {
  const named = <T>(flag: string, make: () => T): T => {
    try {
      return make();
    } catch (err) {
      if (err instanceof CredentialsError) throw new Error(`${flag}: ${err.message}`);
      throw err;
    }
  };
  let credentials = options.auth ? named('--auth', () => Credentials.fromEntries(options.auth!)) : undefined;
  for (const file of options.users ?? []) {
    const fromFile = named('--users', () => Credentials.fromFile(file));
    credentials = credentials ? credentials.merge(fromFile) : fromFile;
  }
  return credentials;
}

/** What the proxy server is given for these options: throws (naming the flag) on bad users or an open proxy. */
function proxyOptionsFrom(options: ProxyCliOptions, role: WorkerRole | undefined, logger: Logger) {
  const credentials = credentialsFrom(options);
  const { listen, muxListen } = splitListen(role?.listen ?? options.listen ?? [{ host: '127.0.0.1', port: 1080 }], options);
  const proxyOptions = {
    listen,
    muxListen,
    listenFd: role ? reusePortListenFd() : undefined,
    credentials,
    allowEmptyCredentials: options.allowEmptyCredentials,
    rules: orderedRules(options),
    open: options.open,
    timeouts: { handshake: options.handshakeTimeout * 1000, connect: options.connectTimeout * 1000, idle: idleMs(options.idleTimeout) },
    limits: { connections: options.maxConnections, perClient: options.maxPerClient },
    engine: options.engine,
    accept: options.accept,
    acceptProxyProtocol: options.acceptProxyProtocol,
    udpAdvertise: options.udpAdvertise,
    logger,
  };
  const risk = openProxyRisk(proxyOptions);
  if (risk) throw new Error(`refusing to start: ${risk}`);
  return proxyOptions;
}

async function runProxy(cli: ProxyCliOptions, command: Command): Promise<void> {
  const read = configuredOptions(command, cli, [['allow', 'deny']]);
  const options = read();
  const role = workerRole();
  const logger = commandLogger(options.logLevel, role);
  const proxyOptions = proxyOptionsFrom(options, role, logger);
  checkMetricsFlags(options);
  if (options.workers > 1 && !role) {
    const unavailable = workersUnavailable();
    if (unavailable) throw new Error(unavailable);
    return superviseWorkers({ workers: options.workers, grace: options.grace, logLevel: options.logLevel, metrics: options, validate: () => void proxyOptionsFrom(read(), undefined, logger) });
  }
  const notifier = serviceNotifier(logger);
  const { engine, spliceEngine, spliceOff } = commandEngine(options.engine, { threads: options.threads });
  // The tls:// and mux+tls:// certificate, read once (a restart changes it); its fingerprint is logged.
  const muxTls = serverTlsFrom(options);
  const server = createProxyServer({ ...proxyOptions, spliceEngine, mux: muxSessionOptions(options), tls: muxTls && { cert: muxTls.cert, key: muxTls.key } });
  const listening = () => [...server.addresses().map(formatHostPort), ...server.muxAddresses().map(formatMuxAddress)];
  const metrics = await startMetrics(options, { service: 'proxy', activeConnections: () => server.activeConnections, spliceEngine }, logger, role !== undefined);
  if (metrics) server.on('connection', (record) => metrics.connectionEnded({ outcome: record.outcome, durationMs: record.durationMs, handshakeFailure: proxyHandshakeFailure(record.outcome) }));
  const bound = await server.listen();
  const listeningAtStart = listening();
  // Before the startup line: whoever sees it may stop the process at once.
  onStopSignal(logger, options.grace, server, spliceEngine, notifier);
  reloadOnSignal({
    logger,
    notifier,
    read,
    initial: options,
    // A worker's listeners are its SO_REUSEPORT share of the group's addresses.
    restartOnly: role ? [...PROXY_RESTART_ONLY, 'listen'] : PROXY_RESTART_ONLY,
    apply: async (next) => {
      await server.reconfigure(proxyOptionsFrom(next, role, logger));
      logger.level = next.logLevel;
      return { listen: listening() };
    },
  });
  logger.info(
    {
      listen: listeningAtStart,
      protocols: ['socks4', 'socks4a', 'socks5', 'http'],
      auth: proxyOptions.credentials?.required ? `${proxyOptions.credentials.size} user(s)` : 'none',
      rules: proxyOptions.rules.map((rule) => rule.source),
      protectHost: server.protectsHost,
      engine,
      spliceOff,
      accept: server.acceptPath,
      acceptProxyProtocol: options.acceptProxyProtocol || undefined,
      tlsFingerprint: muxTls?.fingerprint,
      config: options.config,
    },
    'proxy listening',
  );
  notifier.ready();
  if (role) workerListening(bound, logger);
}

const PROXY_RESTART_ONLY = ['engine', 'accept', 'threads', 'workers', 'grace', 'metrics', ...PROXY_MUX_RESTART_ONLY] as const;

// --allow and --deny are one list: rules are tried in the order they were given, across both
// flags (and, in a config file, across both keys). Each parsed rule is stamped with its place.
const ruleOrder = new WeakMap<Rule, number>();
let rulesParsed = 0;

function ruleArg(action: 'allow' | 'deny') {
  return (value: string, previous: Rule[] | undefined): Rule[] => {
    try {
      const rule = parseRule(action, value);
      ruleOrder.set(rule, rulesParsed++);
      return [...(previous ?? []), rule];
    } catch (err) {
      if (err instanceof RuleError) throw new InvalidArgumentError(err.message);
      throw err;
    }
  };
}

function orderedRules(options: ProxyCliOptions): Rule[] {
  return [...(options.allow ?? []), ...(options.deny ?? [])].sort((a, b) => ruleOrder.get(a)! - ruleOrder.get(b)!);
}

export function addProxyCommand(program: Command): void {
  const command = program
    .command('proxy', { isDefault: false })
    .description('SOCKS4, SOCKS4a, SOCKS5 and HTTP proxy on one port (the first byte tells which), spliced')
    .option(
      '--listen <address>',
      'address to accept on, repeatable; IPv6 as [::1]:1080; :PORT means 127.0.0.1 (default: 127.0.0.1:1080). ' +
        'tls://HOST:PORT takes clients over TLS (an HTTPS proxy; --tls-cert, --tls-key); mux://HOST:PORT accepts yamux sessions, mux+tls://HOST:PORT yamux over TLS: each stream is served as a connection is',
      proxyListenArg('127.0.0.1'),
    )
    .option('--auth <user:pass>', 'a user allowed in (SOCKS5 username/password, HTTP Basic), repeatable', collect)
    .option('--users <file>', 'a file of users, one user:pass a line (# comments), repeatable', collect)
    .option('--allow-empty-credentials', 'accept a configured user whose name or password is empty (clients that send empty fields)')
    .option('--allow <rule>', 'allow what the rule matches; rules are tried in the order given, first match wins. ' +
      'RULE: space-separated from=CIDR to=CIDR|HOSTGLOB port=N|N-M cmd=connect|bind|udp user=NAME, values comma-separated', ruleArg('allow'))
    .option('--deny <rule>', 'deny what the rule matches (syntax as --allow). With no match: denied if any --allow is given, else allowed', ruleArg('deny'))
    .option('--open', 'allow a non-loopback --listen with no auth and no from= allow rule (an open proxy), and a --metrics address beyond loopback')
    .option('--handshake-timeout <seconds>', 'close a client that has not sent its request by then', secondsArg('--handshake-timeout'), DEFAULT_TIMEOUTS.handshake / 1000)
    .option('--connect-timeout <seconds>', 'give up on a destination after this long (SOCKS5 reply 06, HTTP 504)', secondsArg('--connect-timeout'), DEFAULT_TIMEOUTS.connect / 1000)
    .addOption(idleTimeoutOption('pair', DEFAULT_TIMEOUTS.idle / 1000))
    .option('--max-connections <n>', 'client connections open at once (per worker with --workers); past it new ones are closed', integerArg('--max-connections', 1, 1_000_000), DEFAULT_LIMITS.connections)
    .option('--max-per-client <n>', 'client connections open at once from one IP (per worker with --workers)', integerArg('--max-per-client', 1, 1_000_000), DEFAULT_LIMITS.perClient)
    .option('--udp-advertise <addr>', 'address sent to SOCKS5 UDP clients as where to send datagrams (the public one, behind NAT)');
  addProxyMuxOptions(command)
    .addOption(engineOption())
    .addOption(acceptOption('a SOCKS or HTTP CONNECT'))
    .addOption(acceptProxyProtocolOption('--handshake-timeout', ' (on either accept path)'))
    .addOption(threadsOption())
    .addOption(graceOption('connection'))
    .addOption(workersOption(', as are --max-connections and --max-per-client'))
    .addOption(metricsOption())
    .addOption(logLevelOption())
    .addHelpText(
      'after',
      `
The proxy's own host: when any --listen address is beyond loopback, destinations on this host are
denied, checked on every address a name resolves to: 127.0.0.0/8, ::1, 0.0.0.0/8, ::,
169.254.0.0/16 (cloud metadata), fe80::/10 and every interface address, IPv4-mapped forms included
(SOCKS5 reply 02, SOCKS4 5B, HTTP 403, outcome "denied"). An --allow lifts this for an address when
it is the first rule to match and its to= names the address by IP or CIDR; a from=, port= or user=
allow alone does not, nor to=0.0.0.0/0, ::/0 or a host name.

Examples:
  # reach this host's 127.0.0.1:8080 too; the second rule keeps every other destination allowed
  # (with any --allow given, what no rule matches is denied)
  splicer proxy --listen 0.0.0.0:1080 --auth alice:s3cret --allow 'to=127.0.0.1 port=8080' --allow '*'
  # keep clients off the private networks as well
  splicer proxy --listen 0.0.0.0:1080 --auth alice:s3cret --deny 'to=10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,fc00::/7'`,
    )
    .addOption(configOption())
    .action(runProxy);
}
