// Username/password store for SOCKS5 (RFC 1929) and HTTP Basic auth.
// Only keyed digests are kept, so neither a heap dump nor an error message shows a password.
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';

export class CredentialsError extends Error {
  readonly code = 'ERR_BAD_CREDENTIALS';
  override name = 'CredentialsError';
}

// Per-process key: digests are comparable within this process only and useless to anyone who sees them.
const KEY = randomBytes(32);
// Checked against when the user is unknown, so that case costs the same as a wrong password.
const DUMMY = randomBytes(32);

function digest(value: string | Buffer): Buffer {
  return createHmac('sha256', KEY).update(value).digest();
}

export class Credentials {
  // User digest (hex) -> password digest. The Map lookup's timing depends only on HMAC outputs under
  // a secret key, which tells an attacker nothing about which names exist.
  readonly #users: Map<string, Buffer>;

  private constructor(users: Map<string, Buffer>) {
    this.#users = users;
  }

  /** `user:pass` entries, split at the first ':' (the password may contain ':'); a later duplicate user wins. */
  static fromEntries(entries: string[]): Credentials {
    const users = new Map<string, Buffer>();
    entries.forEach((entry, i) => {
      if (!add(users, entry)) {
        throw new CredentialsError(`credentials entry ${i + 1} of ${entries.length} has no ':' (expected user:password)`);
      }
    });
    return new Credentials(users);
  }

  /** One `user:pass` a line; blank lines and lines starting with '#' are skipped. */
  static fromFile(path: string): Credentials {
    let text: string;
    try {
      text = readFileSync(path, 'utf8');
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code ?? 'error';
      throw new CredentialsError(`cannot read credentials file ${path}: ${code}`, { cause: err });
    }
    const users = new Map<string, Buffer>();
    text
      .replace(/^\uFEFF/, '')
      .split('\n')
      .forEach((raw, i) => {
        const line = raw.endsWith('\r') ? raw.slice(0, -1) : raw;
        if (line.trim() === '' || line.trimStart().startsWith('#')) return;
        // The line may hold a password typed without its user: never echo it.
        if (!add(users, line)) throw new CredentialsError(`${path}:${i + 1}: line has no ':' (expected user:password)`);
      });
    return new Credentials(users);
  }

  /** A new set holding both; for a user in both, `other`'s password wins. */
  merge(other: Credentials): Credentials {
    return new Credentials(new Map([...this.#users, ...other.#users]));
  }

  get size(): number {
    return this.#users.size;
  }

  get required(): boolean {
    return this.#users.size > 0;
  }

  /** Constant time in the contents of user and pass: an unknown user does the same work as a wrong password. */
  verify(user: string | Buffer, pass: string | Buffer): boolean {
    const expected = this.#users.get(digest(user).toString('hex'));
    const passOk = timingSafeEqual(expected ?? DUMMY, digest(pass));
    return passOk && expected !== undefined;
  }
}

function add(users: Map<string, Buffer>, entry: string): boolean {
  const colon = entry.indexOf(':');
  if (colon < 0) return false;
  users.set(digest(entry.slice(0, colon)).toString('hex'), digest(entry.slice(colon + 1)));
  return true;
}
