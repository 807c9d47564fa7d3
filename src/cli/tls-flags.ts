// The TLS flags, with the tunnel's names and meanings: a listener's certificate (--tls-cert,
// --tls-key) and how an upstream is verified (--tls, --tls-ca, --tls-fingerprint, --tls-servername).
import { readFileSync } from 'node:fs';
import { InvalidArgumentError } from 'commander';
import { certificateFingerprint, parseFingerprint, type ClientTlsOptions } from '../net/tls-dial.js';

export function readPem(flag: string, file: string): Buffer {
  try {
    return readFileSync(file);
  } catch (err) {
    throw new Error(`${flag}: cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? 'error'}`);
  }
}

/** --tls-fingerprint: checked as it is parsed, kept as written. */
export const fingerprintArg = (value: string): string => {
  try {
    parseFingerprint(value);
    return value;
  } catch (err) {
    throw new InvalidArgumentError((err as Error).message);
  }
};

export interface ServerTlsFlags {
  tlsCert?: string;
  tlsKey?: string;
}

export interface ClientTlsFlags {
  tls?: boolean;
  tlsCa?: string;
  tlsFingerprint?: string;
  tlsServername?: string;
}

/** A listener's certificate and key, and the certificate's fingerprint for clients to pin; undefined without the flags. */
export function serverTlsFrom(flags: ServerTlsFlags): { cert: Buffer; key: Buffer; fingerprint: string } | undefined {
  if ((flags.tlsCert === undefined) !== (flags.tlsKey === undefined)) throw new Error('--tls-cert and --tls-key go together');
  if (flags.tlsCert === undefined) return undefined;
  const cert = readPem('--tls-cert', flags.tlsCert);
  const key = readPem('--tls-key', flags.tlsKey!);
  let fingerprint: string;
  try {
    fingerprint = certificateFingerprint(cert);
  } catch (err) {
    throw new Error(`--tls-cert: ${flags.tlsCert} holds no PEM certificate (${(err as Error).message})`);
  }
  return { cert, key, fingerprint };
}

/** The client TLS flags given, by name: those that need a TLS upstream. */
export function clientTlsFlagsGiven(flags: ClientTlsFlags): string[] {
  return [flags.tls ? '--tls' : '', flags.tlsCa !== undefined ? '--tls-ca' : '', flags.tlsFingerprint !== undefined ? '--tls-fingerprint' : '', flags.tlsServername !== undefined ? '--tls-servername' : ''].filter(Boolean);
}

/** How a TLS upstream is verified: the system CAs (as --tls), a CA file, or a pinned fingerprint. */
export function clientTlsFrom(flags: ClientTlsFlags): ClientTlsOptions {
  if (flags.tlsCa !== undefined && flags.tlsFingerprint !== undefined) throw new Error('give --tls-ca or --tls-fingerprint, not both');
  return {
    ca: flags.tlsCa !== undefined ? readPem('--tls-ca', flags.tlsCa) : undefined,
    fingerprint: flags.tlsFingerprint,
    servername: flags.tlsServername,
  };
}
