import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { inspect } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';
import { Credentials, CredentialsError } from '../src/proxy/auth.js';

const dir = mkdtempSync(join(tmpdir(), 'splicer-auth-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function file(name: string, text: string): string {
  const path = join(dir, name);
  writeFileSync(path, text);
  return path;
}

function thrown(fn: () => unknown): CredentialsError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(CredentialsError);
    expect((err as CredentialsError).code).toBe('ERR_BAD_CREDENTIALS');
    return err as CredentialsError;
  }
  throw new Error('expected a CredentialsError');
}

describe('Credentials.fromEntries', () => {
  it('verifies the right pair and nothing else', () => {
    const creds = Credentials.fromEntries(['alice:wonderland', 'bob:builder']);
    expect(creds.size).toBe(2);
    expect(creds.required).toBe(true);
    expect(creds.verify('alice', 'wonderland')).toBe(true);
    expect(creds.verify('bob', 'builder')).toBe(true);
    expect(creds.verify('alice', 'builder')).toBe(false);
    expect(creds.verify('alice', 'wonderlan')).toBe(false);
    expect(creds.verify('alice', '')).toBe(false);
    expect(creds.verify('Alice', 'wonderland')).toBe(false);
    expect(creds.verify('mallory', 'wonderland')).toBe(false);
    expect(creds.verify('', '')).toBe(false);
  });

  it('splits at the first colon, so passwords may hold colons', () => {
    const creds = Credentials.fromEntries(['carol:a:b::c', 'dave:']);
    expect(creds.verify('carol', 'a:b::c')).toBe(true);
    expect(creds.verify('carol:a', 'b::c')).toBe(false);
    expect(creds.verify('dave', '')).toBe(true);
  });

  it('accepts the empty user with the empty password only when configured', () => {
    expect(Credentials.fromEntries([]).verify('', '')).toBe(false);
    const creds = Credentials.fromEntries([':']);
    expect(creds.verify('', '')).toBe(true);
    expect(creds.verify(Buffer.alloc(0), Buffer.alloc(0))).toBe(true);
    expect(creds.verify('', 'x')).toBe(false);
  });

  it('compares bytes: Buffers and UTF-8 strings agree', () => {
    const creds = Credentials.fromEntries(['zoë:pässwörd']);
    expect(creds.verify(Buffer.from('zoë'), Buffer.from('pässwörd'))).toBe(true);
    expect(creds.verify('zoë', Buffer.from('pässwörd', 'utf8'))).toBe(true);
    expect(creds.verify(Buffer.from('zoë', 'latin1'), 'pässwörd')).toBe(false);
    expect(creds.verify(Buffer.from([0x7a, 0x6f, 0xc3]), 'pässwörd')).toBe(false);
  });

  it('lets a later duplicate user win', () => {
    const creds = Credentials.fromEntries(['u:old', 'u:new']);
    expect(creds.size).toBe(1);
    expect(creds.verify('u', 'new')).toBe(true);
    expect(creds.verify('u', 'old')).toBe(false);
  });

  it('is not required when empty', () => {
    const creds = Credentials.fromEntries([]);
    expect(creds.size).toBe(0);
    expect(creds.required).toBe(false);
  });

  it('names the entry index and never its content', () => {
    const err = thrown(() => Credentials.fromEntries(['alice:ok', 'hunter2secret']));
    expect(err.message).toBe("credentials entry 2 of 2 has no ':' (expected user:password)");
    expect(err.message).not.toContain('hunter2secret');
    expect(inspect(err)).not.toContain('hunter2secret');
    expect(JSON.stringify(err)).not.toContain('hunter2secret');
  });

  it('shows no secrets when inspected', () => {
    const creds = Credentials.fromEntries(['alice:topsecret']);
    expect(inspect(creds, { showHidden: true, depth: 5 })).not.toMatch(/topsecret|alice/);
    expect(JSON.stringify(creds)).not.toMatch(/topsecret|alice/);
  });
});

describe('Credentials.fromFile', () => {
  it('skips blanks and comments and keeps passwords byte for byte', () => {
    const path = file(
      'users.txt',
      '\uFEFF# users for the proxy\n\nalice:wonder land \n   # indented comment\r\nbob:pa#ss:word\r\n\t\n:\n',
    );
    const creds = Credentials.fromFile(path);
    expect(creds.size).toBe(3);
    expect(creds.verify('alice', 'wonder land ')).toBe(true);
    expect(creds.verify('alice', 'wonder land')).toBe(false);
    expect(creds.verify('bob', 'pa#ss:word')).toBe(true);
    expect(creds.verify('', '')).toBe(true);
  });

  it('accepts a file with only comments', () => {
    expect(Credentials.fromFile(file('empty.txt', '# nobody yet\n')).required).toBe(false);
  });

  it('names the file and line, never the content', () => {
    const path = file('bad.txt', '# header\nalice:ok\n\nmy-lonely-password\n');
    const err = thrown(() => Credentials.fromFile(path));
    expect(err.message).toBe(`${path}:4: line has no ':' (expected user:password)`);
    expect(inspect(err)).not.toContain('my-lonely-password');
    expect(inspect(err)).not.toContain(':ok');
  });

  it('reports an unreadable file with its errno', () => {
    const path = join(dir, 'missing.txt');
    const err = thrown(() => Credentials.fromFile(path));
    expect(err.message).toBe(`cannot read credentials file ${path}: ENOENT`);
    expect((err.cause as NodeJS.ErrnoException).code).toBe('ENOENT');
  });
});

describe('Credentials.merge', () => {
  it('unions both sets, the argument winning on a shared user, without changing either', () => {
    const a = Credentials.fromEntries(['alice:1', 'shared:a']);
    const b = Credentials.fromFile(file('more.txt', 'bob:2\nshared:b\n'));
    const merged = a.merge(b);
    expect(merged.size).toBe(3);
    expect(merged.verify('alice', '1')).toBe(true);
    expect(merged.verify('bob', '2')).toBe(true);
    expect(merged.verify('shared', 'b')).toBe(true);
    expect(merged.verify('shared', 'a')).toBe(false);
    expect(a.size).toBe(2);
    expect(a.verify('shared', 'a')).toBe(true);
    expect(a.verify('bob', '2')).toBe(false);
    expect(b.size).toBe(2);
  });
});
