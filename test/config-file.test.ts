// --config FILE, without sockets: the keys come from each command's own flags, values go through
// the flags' own parsers, every error names its key path, and the command line wins over the file.
import { Command } from 'commander';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { configKeys, ConfigError, mergeConfig, parseConfig } from '../src/cli/config-file.js';
import { addForwardCommand } from '../src/cli/forward.js';
import { addProxyCommand } from '../src/cli/proxy.js';
import { tunnelCommand } from '../src/cli/tunnel.js';
import type { Rule } from '../src/proxy/rules.js';

function command(name: 'proxy' | 'forward' | 'tunnel server' | 'tunnel client'): Command {
  const program = new Command('splicer').exitOverride();
  addProxyCommand(program);
  addForwardCommand(program);
  program.addCommand(tunnelCommand());
  const [first, second] = name.split(' ');
  const top = program.commands.find((c) => c.name() === first)!;
  const found = second ? top.commands.find((c) => c.name() === second)! : top;
  found.exitOverride();
  return found;
}

/** The command's options after parsing `argv` as its command line. */
function parsed(name: 'proxy' | 'forward', argv: string[]): { cmd: Command; cli: Record<string, unknown> } {
  const cmd = command(name);
  cmd.action(() => {});
  cmd.parse(argv, { from: 'user' });
  return { cmd, cli: cmd.opts() };
}

const errorOf = (fn: () => unknown): string => {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return (err as Error).message;
  }
  throw new Error('no error');
};

describe('config keys', () => {
  it('are the long flags of each command, a repeatable flag a list, --config itself not one', () => {
    const proxy = configKeys(command('proxy'));
    expect(proxy.get('listen')?.kind).toBe('list');
    expect(proxy.get('auth')?.kind).toBe('list');
    expect(proxy.get('allow')?.kind).toBe('list');
    expect(proxy.get('deny')?.kind).toBe('list');
    expect(proxy.get('max-connections')?.kind).toBe('value');
    expect(proxy.get('handshake-timeout')?.kind).toBe('value');
    expect(proxy.get('engine')?.kind).toBe('value');
    expect(proxy.get('open')?.kind).toBe('flag');
    expect(proxy.has('config')).toBe(false);
    expect(configKeys(command('forward')).get('to')?.kind).toBe('value');
    expect(configKeys(command('tunnel server')).get('ports')?.kind).toBe('value');
    expect(configKeys(command('tunnel client')).get('expose')?.kind).toBe('list');
    // A refused, hidden flag is no key.
    expect(configKeys(command('tunnel server')).has('workers')).toBe(false);
  });
});

describe('parseConfig', () => {
  it('reads values through the flags own parsers', () => {
    const values = parseConfig(
      command('proxy'),
      { listen: [':1080', '[::1]:1081'], auth: ['alice:s3cret'], 'max-connections': 50, 'handshake-timeout': '2.5', open: true, engine: 'js' },
      'p.yaml',
    );
    expect(values).toEqual({
      listen: [
        { host: '127.0.0.1', port: 1080 },
        { host: '::1', port: 1081 },
      ],
      auth: ['alice:s3cret'],
      maxConnections: 50,
      handshakeTimeout: 2.5,
      open: true,
      engine: 'js',
    });
  });

  it('refuses an unknown key, naming it and the key it was probably meant to be', () => {
    expect(errorOf(() => parseConfig(command('proxy'), { 'max-conections': 5 }, 'p.yaml'))).toBe('p.yaml: max-conections: unknown key (did you mean "max-connections"?)');
    expect(errorOf(() => parseConfig(command('forward'), { upstream: '1.2.3.4:5' }, 'f.json'))).toBe('f.json: upstream: unknown key');
  });

  it('names the key path and the flag parser reason of every bad value', () => {
    const message = errorOf(() => parseConfig(command('proxy'), { listen: [':1080', '1.2.3.4:99999'], 'max-connections': 0, 'handshake-timeout': -1 }, 'p.yaml'));
    expect(message).toContain('listen[1]: "1.2.3.4:99999": port 99999 is out of range');
    expect(message).toContain('max-connections: --max-connections must be from 1 to 1000000, got 0');
    expect(message).toContain('handshake-timeout: --handshake-timeout must be a number of seconds >= 0, got "-1"');
    expect(errorOf(() => parseConfig(command('proxy'), { allow: ['port=99999999'] }, 'p.yaml'))).toMatch(/^p\.yaml: allow\[0\]: /);
  });

  it('names wrong shapes: a scalar for a list, a list for a scalar, a string for a switch, a bad choice', () => {
    expect(errorOf(() => parseConfig(command('proxy'), { listen: ':1080' }, 'p.yaml'))).toBe('p.yaml: listen: expected a list (this flag is repeatable)');
    expect(errorOf(() => parseConfig(command('proxy'), { 'max-connections': [1] }, 'p.yaml'))).toBe('p.yaml: max-connections: expected a string or a number');
    expect(errorOf(() => parseConfig(command('proxy'), { open: 'yes' }, 'p.yaml'))).toBe('p.yaml: open: expected true or false');
    expect(errorOf(() => parseConfig(command('proxy'), { engine: 'fast' }, 'p.yaml'))).toBe('p.yaml: engine: expected one of auto, splice, js');
    expect(errorOf(() => parseConfig(command('proxy'), ['listen'], 'p.yaml'))).toBe('p.yaml: (top level): expected a mapping of flag names to values');
    expect(parseConfig(command('proxy'), null, 'empty.yaml')).toEqual({});
  });

  it('any key that is not a flag of the command is refused by name', () => {
    const known = new Set(configKeys(command('proxy')).keys());
    fc.assert(
      fc.property(
        fc.string({ minLength: 1, maxLength: 20 }).filter((key) => !known.has(key) && key !== '__proto__'),
        (key) => {
          const message = errorOf(() => parseConfig(command('proxy'), { [key]: 1 }, 'p.yaml'));
          expect(message).toContain(`${key}: unknown key`);
        },
      ),
      { numRuns: 200 },
    );
  });
});

describe('mergeConfig', () => {
  it('gives the command line the last word, the file the next, then the defaults', () => {
    const { cmd, cli } = parsed('proxy', ['--max-connections', '7']);
    const fromFile = parseConfig(cmd, { 'max-connections': 50, 'max-per-client': 3, listen: [':2000'] }, 'p.yaml');
    const merged = mergeConfig(cmd, cli, fromFile) as Record<string, unknown>;
    expect(merged.maxConnections).toBe(7);
    expect(merged.maxPerClient).toBe(3);
    expect(merged.listen).toEqual([{ host: '127.0.0.1', port: 2000 }]);
    expect(merged.handshakeTimeout).toBe(10);
  });

  it('takes --allow and --deny from one place: any of them on the command line replaces both of the file', () => {
    const { cmd, cli } = parsed('proxy', ['--allow', 'port=443']);
    const fromFile = parseConfig(cmd, { deny: ['to=10.0.0.0/8'], allow: ['*'] }, 'p.yaml');
    const merged = mergeConfig(cmd, cli, fromFile, [['allow', 'deny']]) as { allow?: Rule[]; deny?: Rule[] };
    expect(merged.allow?.map((r) => r.source)).toEqual(['allow port=443']);
    expect(merged.deny).toBeUndefined();
    const none = parsed('proxy', []);
    const fileOnly = mergeConfig(none.cmd, none.cli, parseConfig(none.cmd, { deny: ['to=10.0.0.0/8'] }, 'p.yaml'), [['allow', 'deny']]) as { deny?: Rule[] };
    expect(fileOnly.deny?.map((r) => r.source)).toEqual(['deny to=10.0.0.0/8']);
  });
});
