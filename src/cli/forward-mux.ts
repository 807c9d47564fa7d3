// `splicer forward` with a yamux end: `--to mux://HOST:PORT` (n:1) or `--listen mux://HOST:PORT`
// (1:n). The flags that parse mux:// addresses and the --mux-* options, and the run itself.
import { InvalidArgumentError, Option, type Command } from 'commander';
import { formatHostPort, isLoopback, type HostPort } from '../net/host-port.js';
import { MuxForwarder } from '../forwarder/mux.js';
import { MUX_DEFAULTS } from '../mux/options.js';
import type { LOG_LEVELS } from '../logger.js';
import { hostPortArg, integerArg, onStopSignal, secondsArg } from './flags.js';
import { commandLogger } from './workers.js';

/** A HOST:PORT that may be written mux://HOST:PORT. */
export type MaybeMuxAddress = HostPort & { mux?: true };

const MUX_SCHEME = 'mux://';

export function muxAddressArg(defaultHost?: string, allowZero = false) {
  const parse = hostPortArg(defaultHost, allowZero);
  return (value: string): MaybeMuxAddress => {
    const trimmed = value.trim();
    if (trimmed.toLowerCase().startsWith(MUX_SCHEME)) return { ...parse(trimmed.slice(MUX_SCHEME.length)), mux: true };
    if (/^[a-z][a-z0-9+.-]*:\/\//i.test(trimmed)) throw new InvalidArgumentError(`"${value}": the only scheme taken is mux:// (yamux); plain HOST:PORT is TCP`);
    return parse(trimmed);
  };
}

export function muxAddressListArg(defaultHost?: string, allowZero = false) {
  const parse = muxAddressArg(defaultHost, allowZero);
  return (value: string, previous: MaybeMuxAddress[] | undefined): MaybeMuxAddress[] => [...(previous ?? []), parse(value)];
}

/** 256k, 4m, 4MiB, or bytes. */
function byteSizeArg(name: string, min: number, max: number) {
  return (value: string): number => {
    const m = /^\s*(\d+)\s*(k|kib|m|mib)?\s*$/i.exec(value);
    if (!m) throw new InvalidArgumentError(`${name} must be a size in bytes (or with k/m, as 256k or 4m), got "${value}"`);
    const unit = (m[2] ?? '').toLowerCase();
    const bytes = Number(m[1]) * (unit.startsWith('k') ? 1024 : unit.startsWith('m') ? 1024 * 1024 : 1);
    if (bytes < min || bytes > max) throw new InvalidArgumentError(`${name} must be from ${min} to ${max} bytes, got ${bytes}`);
    return bytes;
  };
}

/** The --mux-* flags; `when` says in their help when they apply. */
export function addMuxOptions(command: Command, when = 'with mux://'): Command {
  return command
    .addOption(
      new Option('--mux-window <bytes>', `${when}: the largest receive window a stream grows to (256k … 1024m)`)
        .argParser(byteSizeArg('--mux-window', 256 * 1024, 1024 * 1024 * 1024))
        .default(MUX_DEFAULTS.maxWindow, '4m'),
    )
    .addOption(
      new Option('--mux-max-streams <n>', `${when}: streams open at once per session; one more gets RST`)
        .argParser(integerArg('--mux-max-streams', 1, 1 << 20))
        .default(MUX_DEFAULTS.maxStreams),
    )
    .addOption(
      new Option('--mux-keepalive <seconds>', `${when}: seconds between pings; a session that answers nothing for 10 s more fails (0: no pings)`)
        .argParser(secondsArg('--mux-keepalive', 86_400))
        .default(MUX_DEFAULTS.keepaliveInterval / 1000),
    );
}

export interface MuxForwardCliOptions {
  listen?: MaybeMuxAddress[];
  to: MaybeMuxAddress;
  workers: number;
  idleTimeout: number;
  connectTimeout: number;
  grace: number;
  muxWindow: number;
  muxMaxStreams: number;
  muxKeepalive: number;
  logLevel: (typeof LOG_LEVELS)[number];
}

/** Whether the command names a mux:// end. */
export function usesMux(options: { listen?: MaybeMuxAddress[]; to: MaybeMuxAddress }): boolean {
  return Boolean(options.to.mux || options.listen?.some((address) => address.mux));
}

export async function runMuxForward(options: MuxForwardCliOptions): Promise<void> {
  const listen = options.listen ?? [{ host: '127.0.0.1', port: 9000 }];
  const muxListen = listen.filter((address) => address.mux).length;
  if (muxListen > 0 && muxListen < listen.length) throw new Error('--listen addresses must all be mux:// or all be plain HOST:PORT');
  if (muxListen > 0 && options.to.mux) throw new Error('mux:// on both --listen and --to: one side of the hop must be plain TCP');
  if (options.workers > 1) throw new Error('--workers does not apply with mux://: one process holds the sessions');
  const logger = commandLogger(options.logLevel);
  const forwarder = new MuxForwarder({
    listenKind: muxListen > 0 ? 'mux' : 'tcp',
    listen: listen.map(({ host, port }) => ({ host, port })),
    to: { host: options.to.host, port: options.to.port },
    mux: { maxWindow: options.muxWindow, maxStreams: options.muxMaxStreams, keepaliveInterval: Math.round(options.muxKeepalive * 1000) },
    connectTimeout: options.connectTimeout * 1000,
    idleTimeout: Math.round(options.idleTimeout * 1000),
    logger,
  });
  const bound = await forwarder.listen();
  onStopSignal(logger, options.grace, forwarder, undefined);
  const scheme = (mux: boolean | undefined) => (mux ? MUX_SCHEME : '');
  logger.info(
    {
      listen: bound.map((address) => scheme(muxListen > 0) + formatHostPort(address)),
      to: scheme(options.to.mux) + formatHostPort(options.to),
      engine: 'js',
      muxWindow: options.muxWindow,
      muxMaxStreams: options.muxMaxStreams,
      exposed: listen.some((address) => !isLoopback(address.host)) || undefined,
    },
    'forwarding',
  );
}
