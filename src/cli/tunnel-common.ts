// What `splicer tunnel server` and `splicer tunnel client` share: the token and how it is given,
// PEM files, and why TLS means the JS engine.
import { readFileSync } from 'node:fs';
import type { Command } from 'commander';
import type { LOG_LEVELS, Logger } from '../logger.js';
import type { EngineChoice } from '../engine/contract.js';
import type { HostPort } from '../net/host-port.js';

export const TOKEN_ENV = 'SPLICER_TUNNEL_TOKEN';
/** Below this many characters a token is warned about: the auth exchange is only as strong as it. */
const SHORT_TOKEN = 16;

export type LogLevel = (typeof LOG_LEVELS)[number];

export interface TokenOptions {
  token?: string;
  tokenFile?: string;
}

/** The flags both tunnel commands take, past the token. */
export interface TunnelCommonCliOptions extends TokenOptions {
  config?: string;
  idleTimeout: number;
  engine: EngineChoice;
  dataPath: 'auto' | 'native' | 'node';
  threads: number;
  grace: number;
  metrics?: HostPort;
  open?: boolean;
  logLevel: LogLevel;
}

/** --token, else --token-file, else $SPLICER_TUNNEL_TOKEN; never empty. */
export function resolveToken(options: TokenOptions, env: NodeJS.ProcessEnv = process.env): { token: string; source: string } {
  if (options.token !== undefined && options.tokenFile !== undefined) throw new Error('give --token or --token-file, not both');
  let token: string | undefined;
  let source: string;
  if (options.token !== undefined) {
    token = options.token;
    source = '--token';
  } else if (options.tokenFile !== undefined) {
    try {
      token = readFileSync(options.tokenFile, 'utf8').split(/\r?\n/)[0];
    } catch (err) {
      throw new Error(`--token-file: cannot read ${options.tokenFile}: ${(err as NodeJS.ErrnoException).code ?? 'error'}`);
    }
    source = '--token-file';
  } else {
    token = env[TOKEN_ENV];
    source = TOKEN_ENV;
  }
  if (!token) throw new Error(`refusing to start without a token: give --token-file FILE or set ${TOKEN_ENV} (or --token, which shows in ps)`);
  return { token, source };
}

/** A `token` key of a config file is not in ps, as --token is. */
export const tokenSourceOf = (command: Command, source: string) => (source === '--token' && command.getOptionValueSource('token') !== 'cli' ? '--config' : source);

export function warnAboutToken(logger: Logger, token: string, source: string): void {
  if (source === '--token') logger.warn('--token shows in ps and in shell history: prefer --token-file or ' + TOKEN_ENV);
  if (token.length < SHORT_TOKEN) logger.warn({ length: token.length }, `the token is short: use ${SHORT_TOKEN} or more random characters (openssl rand -hex 32)`);
}

export { readPem } from './tls-flags.js';

export const TLS_IS_JS = 'TLS data connections are carried by the JS engine';
