// `splicer forward` where --listen or --to names a scheme other than tcp:// (tls://, mux://,
// mux+tls://): the flags that parse such addresses, the --mux-* and --tls-* options, what may go
// with what, and the run with a TransportForwarder.
import { InvalidArgumentError, Option, type Command } from 'commander';
import { AddressError, isLoopback, type HostPort } from '../net/host-port.js';
import { formatTransportAddress, isMux, isTls, parseTransportAddress, type TransportAddress, type TransportScheme } from '../net/transport-url.js';
import { TransportForwarder } from '../forwarder/transport.js';
import { resolveMuxDataPath, type MuxDataPath } from '../forwarder/spliced-mux.js';
import type { LOG_LEVELS } from '../logger.js';
import type { EngineChoice } from '../engine/contract.js';
import { commandEngine, integerArg, onStopSignal } from './flags.js';
import { addMuxOptions } from './mux-flags.js';
import { commandLogger } from './workers.js';
import { checkMetricsFlags, startMetrics } from './metrics.js';
import { reloadOnSignal } from './reload.js';
import { serviceNotifier } from '../ops/systemd-notify.js';
import { clientTlsFlagsGiven, clientTlsFrom, fingerprintArg, serverTlsFrom, type ClientTlsFlags, type ServerTlsFlags } from './tls-flags.js';

export function transportAddressArg(defaultHost?: string, allowZero = false) {
  return (value: string): TransportAddress => {
    try {
      return parseTransportAddress(value, { defaultHost, allowZero });
    } catch (err) {
      if (err instanceof AddressError) throw new InvalidArgumentError(err.message);
      throw err;
    }
  };
}

export function transportAddressListArg(defaultHost?: string, allowZero = false) {
  const parse = transportAddressArg(defaultHost, allowZero);
  return (value: string, previous: TransportAddress[] | undefined): TransportAddress[] => [...(previous ?? []), parse(value)];
}

export function addTransportOptions(command: Command): Command {
  return addMuxOptions(command)
    .addOption(
      new Option('--mux-sessions <n>', 'with --to mux:// or mux+tls://: sessions kept up, each new client a stream on the one with the fewest open (default 1)').argParser(
        integerArg('--mux-sessions', 1, 64),
      ),
    )
    .addOption(
      new Option(
        '--mux-data-path <path>',
        'with plain mux:// at one end and TCP at the other: splice (stream bytes moved by splice() in the addon, Linux), js (src/mux in JS), auto (splice where it can; default)',
      ).choices(['auto', 'splice', 'js']),
    )
    .addOption(new Option('--tls-cert <file>', 'PEM certificate of a tls:// or mux+tls:// --listen (its SHA-256 fingerprint is logged at start)'))
    .addOption(new Option('--tls-key <file>', 'PEM private key of --tls-cert'))
    .addOption(new Option('--tls', 'with --to tls:// or mux+tls://: verify the upstream against the system CAs (the default there)'))
    .addOption(new Option('--tls-ca <file>', 'with --to tls:// or mux+tls://: verify the upstream against this PEM CA instead'))
    .addOption(
      new Option('--tls-fingerprint <sha256>', "with --to tls:// or mux+tls://: accept only the certificate with this SHA-256 fingerprint (hex, colons allowed)").argParser(fingerprintArg),
    )
    .addOption(new Option('--tls-servername <name>', 'with --to tls:// or mux+tls://: name to verify the certificate for, and to send as SNI (default: the --to host)'));
}

export interface TransportForwardCliOptions extends ServerTlsFlags, ClientTlsFlags {
  listen?: TransportAddress[];
  to: TransportAddress;
  engine: EngineChoice;
  workers: number;
  idleTimeout: number;
  connectTimeout: number;
  grace: number;
  muxWindow: number;
  muxMaxStreams: number;
  muxKeepalive: number;
  muxSessions?: number;
  muxDataPath?: MuxDataPath;
  acceptProxyProtocol?: boolean;
  sendProxyProtocol?: unknown;
  metrics?: HostPort;
  open?: boolean;
  config?: string;
  logLevel: (typeof LOG_LEVELS)[number];
}

export const DEFAULT_LISTEN: TransportAddress = { scheme: 'tcp', host: '127.0.0.1', port: 9000 };

/** The one scheme of the --listen addresses. */
function listenSchemeOf(listen: TransportAddress[]): TransportScheme {
  const schemes = [...new Set(listen.map((address) => address.scheme))];
  if (schemes.length > 1) throw new Error(`--listen addresses must all have one scheme, got ${schemes.map((s) => `${s}://`).join(' and ')}`);
  return schemes[0] ?? 'tcp';
}

/** Whether the command needs a TransportForwarder: a scheme other than tcp:// at either end. */
export function usesTransport(options: { listen?: TransportAddress[]; to: TransportAddress }): boolean {
  return options.to.scheme !== 'tcp' || (options.listen ?? []).some((address) => address.scheme !== 'tcp');
}

/**
 * What may go with what, checked before anything starts; throws naming the flag. Returns the
 * listen scheme. Also called for plain TCP, where the TLS and mux-only flags are refused.
 */
export function checkTransports(options: TransportForwardCliOptions): TransportScheme {
  const listen = options.listen ?? [DEFAULT_LISTEN];
  const from = listenSchemeOf(listen);
  const to = options.to.scheme;
  if (isMux(from) && isMux(to)) throw new Error(`${from}:// on --listen and ${to}:// on --to: one side of the hop must be plain TCP or TLS`);
  if (isTls(from) && options.tlsCert === undefined) throw new Error(`--listen ${from}://… needs --tls-cert and --tls-key (PEM files)`);
  if (!isTls(from) && (options.tlsCert !== undefined || options.tlsKey !== undefined)) {
    throw new Error(`--tls-cert and --tls-key are for a tls:// or mux+tls:// --listen; --listen here is ${from}://`);
  }
  const clientFlags = clientTlsFlagsGiven(options);
  if (!isTls(to) && clientFlags.length > 0) throw new Error(`${clientFlags.join(', ')}: for a tls:// or mux+tls:// --to; --to here is ${formatTransportAddress(options.to)}`);
  if (options.muxSessions !== undefined && !isMux(to)) throw new Error(`--mux-sessions is for a mux:// or mux+tls:// --to; --to here is ${formatTransportAddress(options.to)}`);
  if (options.muxDataPath !== undefined && !isMux(from) && !isMux(to)) throw new Error('--mux-data-path is for a mux:// --listen or --to');
  if (options.muxDataPath === 'splice') resolveMuxDataPath('splice', from, to, options.engine, options.idleTimeout);
  if (from === 'tcp' && to === 'tcp') return from;
  if (options.acceptProxyProtocol || options.sendProxyProtocol) throw new Error('--accept-proxy-protocol and --send-proxy-protocol work with plain TCP at both ends only');
  if (options.workers > 1) throw new Error(`--workers does not apply with ${isMux(from) || isMux(to) ? 'mux:// (one process holds the sessions)' : 'tls:// (the JS engine, one process)'}`);
  // A mux listener opens a connection to --to per stream for whoever reaches it, any number of them.
  const exposed = isMux(from) ? listen.find((address) => !isLoopback(address.host)) : undefined;
  if (exposed && !options.open) {
    throw new Error(`refusing to start: --listen ${formatTransportAddress(exposed)} is beyond loopback: anyone reaching it opens streams to --to; give --open to allow it`);
  }
  return from;
}

const JS_ONLY = 'TLS and mux streams are carried by the JS engine';

/** What a SIGHUP reads: the options as the command line and --config give them now, and the names of all of them. */
export interface TransportReload {
  reread: () => TransportForwardCliOptions;
  settings: string[];
}

export async function runTransportForward(options: TransportForwardCliOptions, reload?: TransportReload): Promise<void> {
  const listen = options.listen ?? [DEFAULT_LISTEN];
  const listenScheme = checkTransports(options);
  checkMetricsFlags(options);
  const muxDataPath = isMux(listenScheme) || isMux(options.to.scheme) ? resolveMuxDataPath(options.muxDataPath ?? 'auto', listenScheme, options.to.scheme, options.engine, options.idleTimeout) : 'js';
  // The spliced mux path is the addon's own: no SpliceEngine to start.
  const { engine, spliceOff } = muxDataPath === 'splice' ? { engine: 'splice' as const, spliceOff: undefined } : commandEngine(options.engine, {}, JS_ONLY);
  const serverTls = isTls(listenScheme) ? serverTlsFrom(options) : undefined;
  const clientTls = isTls(options.to.scheme) ? clientTlsFrom(options) : undefined;
  const logger = commandLogger(options.logLevel);
  const forwarder = new TransportForwarder({
    listenScheme,
    listen: listen.map(({ host, port }) => ({ host, port })),
    toScheme: options.to.scheme,
    to: { host: options.to.host, port: options.to.port },
    serverTls,
    clientTls,
    mux: { maxWindow: options.muxWindow, maxStreams: options.muxMaxStreams, keepaliveInterval: Math.round(options.muxKeepalive * 1000) },
    muxSessions: options.muxSessions,
    muxDataPath,
    connectTimeout: options.connectTimeout * 1000,
    idleTimeout: Math.round(options.idleTimeout * 1000),
    logger,
  });
  const mux = isMux(listenScheme) || isMux(options.to.scheme);
  const metrics = await startMetrics(
    options,
    {
      service: 'forward',
      activeConnections: () => forwarder.activeConnections,
      gauges: mux ? [{ name: 'splicer_mux_sessions', help: 'yamux sessions up now (dialled with --to mux://, accepted with --listen mux://)', read: () => forwarder.muxSessions }] : [],
    },
    logger,
    false,
  );
  if (metrics) forwarder.on('connection', (record) => metrics.connectionEnded({ outcome: record.reason, durationMs: record.durationMs }));
  const bound = await forwarder.listen();
  const notifier = serviceNotifier(logger);
  // Before the startup line: whoever sees it may stop the process at once.
  onStopSignal(logger, options.grace, forwarder, undefined, notifier);
  if (reload) {
    // A reload checks the file and applies --log-level; the sessions, TLS and addresses are the process's.
    reloadOnSignal({
      logger,
      notifier,
      read: () => {
        const next = reload.reread();
        checkTransports(next);
        return next;
      },
      initial: options,
      restartOnly: reload.settings.filter((name): name is keyof TransportForwardCliOptions & string => name !== 'logLevel' && name !== 'config'),
      apply: async (next) => {
        logger.level = next.logLevel;
      },
    });
  }
  logger.info(
    {
      listen: bound.map((address) => formatTransportAddress({ ...address, scheme: listenScheme })),
      to: formatTransportAddress(options.to),
      engine,
      spliceOff,
      tls: serverTls ? { fingerprint: serverTls.fingerprint } : undefined,
      muxSessions: isMux(options.to.scheme) ? (options.muxSessions ?? 1) : undefined,
      muxWindow: mux ? options.muxWindow : undefined,
      muxDataPath: mux ? muxDataPath : undefined,
      muxMaxStreams: mux ? options.muxMaxStreams : undefined,
      exposed: listen.some((address) => !isLoopback(address.host)) || undefined,
      config: options.config,
    },
    'forwarding',
  );
  notifier.ready();
}
