// The --mux-* flags, shared by every command with a yamux end (forward, proxy, tunnel client).
import { InvalidArgumentError, Option, type Command } from 'commander';
import { MUX_DEFAULTS } from '../mux/options.js';
import { integerArg, secondsArg } from './flags.js';

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
