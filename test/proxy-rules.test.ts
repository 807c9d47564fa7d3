import net from 'node:net';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { blockListCovers, HOST_RANGES, hostAddressTest, hostBlockList } from '../src/proxy/host-guard.js';
import { evaluateAccess, evaluateRules, hasClientAllowRule, namesAddress, parseIp, parseRule, RuleError, type Rule, type RuleSubject } from '../src/proxy/rules.js';
import { protectsHost } from '../src/proxy/server.js';

const base: RuleSubject = { client: '192.0.2.10', destHost: 'example.com', destPort: 443, command: 'connect' };
const subject = (over: Partial<RuleSubject> = {}): RuleSubject => ({ ...base, ...over });
const allow = (text: string) => parseRule('allow', text);
const deny = (text: string) => parseRule('deny', text);
const allowed = (rules: Rule[], over: Partial<RuleSubject> = {}) => evaluateRules(rules, subject(over)).allowed;

function badRule(text: string): RuleError {
  try {
    parseRule('allow', text);
  } catch (err) {
    expect(err).toBeInstanceOf(RuleError);
    expect((err as RuleError).code).toBe('ERR_BAD_RULE');
    return err as RuleError;
  }
  throw new Error(`expected "${text}" to be rejected`);
}

describe('parseRule syntax', () => {
  it('empty text and * match everything and keep their source', () => {
    for (const text of ['', '   ', '*']) {
      const rule = allow(text);
      expect(rule).toEqual({ action: 'allow', source: 'allow *' });
      expect(evaluateRules([rule], subject()).rule).toBe(rule);
    }
    expect(deny(' to=a.com  port=80 ').source).toBe('deny to=a.com  port=80');
  });

  it('reads every key, comma lists and ranges', () => {
    const rule = allow('from=10.0.0.0/8,::1 to=*.Example.COM,192.0.2.0/24 port=80,8000-8100 cmd=connect,UDP user=alice,bob');
    expect(rule.from).toEqual([
      { kind: 'cidr', family: 4, network: 0x0a000000n, prefix: 8 },
      { kind: 'cidr', family: 6, network: 1n, prefix: 128 },
    ]);
    expect(rule.to).toEqual([
      { kind: 'glob', suffix: 'example.com', subdomains: true },
      { kind: 'cidr', family: 4, network: 0xc0000200n, prefix: 24 },
    ]);
    expect(rule.ports).toEqual([[80, 80], [8000, 8100]]);
    expect(rule.commands).toEqual(['connect', 'udp']);
    expect(rule.users).toEqual(['alice', 'bob']);
  });

  it('treats key=* as no restriction and accepts port 0 and 65535', () => {
    expect(allow('from=* to=* port=* cmd=* user=*')).toEqual({ action: 'allow', source: 'allow from=* to=* port=* cmd=* user=*' });
    expect(allow('port=0,65535,0-65535').ports).toEqual([[0, 0], [65535, 65535], [0, 65535]]);
  });

  it('masks host bits and turns mapped IPv6 networks into IPv4', () => {
    expect(allow('from=10.1.2.3/8').from).toEqual([{ kind: 'cidr', family: 4, network: 0x0a000000n, prefix: 8 }]);
    expect(allow('from=::ffff:10.0.0.0/104').from).toEqual([{ kind: 'cidr', family: 4, network: 0x0a000000n, prefix: 8 }]);
    expect(allow('from=::ffff:7f00:1').from).toEqual([{ kind: 'cidr', family: 4, network: 0x7f000001n, prefix: 32 }]);
    expect(allow('from=2001:db8::1/32').from).toEqual([{ kind: 'cidr', family: 6, network: 0x20010db8n << 96n, prefix: 32 }]);
  });

  it('names the bad token in each error', () => {
    expect(badRule('bogus=1').message).toMatch(/unknown key "bogus" \(expected from, to, port, cmd, user\)/);
    expect(badRule('port=80 nokey').message).toMatch(/"nokey" is not key=value/);
    expect(badRule('=80').message).toMatch(/"=80" is not key=value/);
    expect(badRule('port=').message).toMatch(/"port=" has an empty value/);
    expect(badRule('port=80,,81').message).toMatch(/"port=80,,81" has an empty value/);
    expect(badRule('port=80 port=81').message).toMatch(/"port=" appears twice/);
    expect(badRule('from=10.0.0.0/33').message).toMatch(/prefix "\/33" must be 0-32/);
    expect(badRule('from=::/129').message).toMatch(/prefix "\/129" must be 0-128/);
    expect(badRule('from=10.0.0.0/').message).toMatch(/prefix "\/" must be 0-32/);
    expect(badRule('from=10.0.0.0/-1').message).toMatch(/prefix "\/-1"/);
    expect(badRule('from=300.1.1.1').message).toMatch(/"300.1.1.1" is not an IP address/);
    expect(badRule('from=example.com').message).toMatch(/"example.com" is not an IP address/);
    expect(badRule('from=fe80::1%eth0').message).toMatch(/"fe80::1%eth0" is not an IP address/);
    expect(badRule('to=1.2.3').message).toMatch(/"1.2.3" is not an IP address/);
    expect(badRule('to=1:2:3').message).toMatch(/"1:2:3" is not an IP address/);
    expect(badRule('to=ex*ample.com').message).toMatch(/"ex\*ample.com" is not a host name, IP or CIDR/);
    expect(badRule('to=a.*.com').message).toMatch(/"a.\*.com" is not a host name/);
    expect(badRule('to=bücher.de').message).toMatch(/punycode/);
    expect(badRule('to=a..com').message).toMatch(/"a..com" is not a host name/);
    expect(badRule('port=http').message).toMatch(/port "http" is not N or N-M/);
    expect(badRule('port=65536').message).toMatch(/port "65536" is out of range \(0-65535\)/);
    expect(badRule('port=1-70000').message).toMatch(/port "1-70000" is out of range/);
    expect(badRule('port=90-80').message).toMatch(/port range "90-80" runs backwards/);
    expect(badRule('cmd=connect,listen').message).toMatch(/unknown command "listen" \(expected connect, bind, udp\)/);
    expect(badRule('to=a.com port=99999').message).toMatch(/^bad --allow rule "to=a.com port=99999": /);
    expect(() => deny('x=1')).toThrow(/^bad --deny rule/);
  });

  it('throws only RuleError on random text', () => {
    const tokens = fc.constantFrom('from=', 'to=', 'port=', 'cmd=', 'user=', '*', ',', '/', '-', ':', '.', '=', ' ', '%', '::ffff:', '1', '255', '999', 'a', 'connect');
    const text = fc.oneof(fc.string({ unit: 'grapheme-composite' }), fc.array(tokens).map((t) => t.join('')));
    fc.assert(
      fc.property(text, (t) => {
        try {
          parseRule('deny', t);
        } catch (err) {
          if (!(err instanceof RuleError)) throw err;
        }
      }),
      { numRuns: 3000 },
    );
  });
});

describe('parseIp', () => {
  it('reads IPv4, compressed and embedded IPv6, drops zones and maps ::ffff: to IPv4', () => {
    expect(parseIp('1.2.3.4')).toEqual({ family: 4, value: 0x01020304n });
    expect(parseIp('::')).toEqual({ family: 6, value: 0n });
    expect(parseIp('1::')).toEqual({ family: 6, value: 1n << 112n });
    expect(parseIp('1:2:3:4:5:6:7:8')).toEqual({ family: 6, value: 0x00010002000300040005000600070008n });
    expect(parseIp('64:ff9b::1.2.3.4')).toEqual({ family: 6, value: (0x64ff9bn << 96n) | 0x01020304n });
    expect(parseIp('fe80::1%eth0')).toEqual({ family: 6, value: (0xfe80n << 112n) | 1n });
    expect(parseIp('::ffff:127.0.0.1')).toEqual({ family: 4, value: 0x7f000001n });
    expect(parseIp('::FFFF:7f00:1')).toEqual({ family: 4, value: 0x7f000001n });
    expect(parseIp('example.com')).toBeUndefined();
    expect(parseIp('01.2.3.4')).toBeUndefined();
  });
});

describe('evaluateRules matching', () => {
  it('matches IPv4, IPv6 and IPv4-mapped clients against from', () => {
    const rules = [allow('from=10.0.0.0/8,2001:db8::/32')];
    expect(allowed(rules, { client: '10.255.0.1' })).toBe(true);
    expect(allowed(rules, { client: '11.0.0.1' })).toBe(false);
    expect(allowed(rules, { client: '::ffff:10.1.1.1' })).toBe(true);
    expect(allowed(rules, { client: '::ffff:11.1.1.1' })).toBe(false);
    expect(allowed(rules, { client: '2001:db8:ffff::1' })).toBe(true);
    expect(allowed(rules, { client: '2001:db9::1' })).toBe(false);
    expect(allowed(rules, { client: 'not-an-ip' })).toBe(false);
  });

  it('keeps families apart: ::/0 is IPv6 only, 0.0.0.0/0 covers mapped clients', () => {
    expect(allowed([allow('from=::/0')], { client: '::ffff:1.2.3.4' })).toBe(false);
    expect(allowed([allow('from=::/0')], { client: '::2' })).toBe(true);
    expect(allowed([allow('from=0.0.0.0/0')], { client: '::ffff:1.2.3.4' })).toBe(true);
    expect(allowed([allow('from=0.0.0.0/0')], { client: '::2' })).toBe(false);
    expect(allowed([allow('from=::ffff:0:0/96')], { client: '8.8.8.8' })).toBe(true);
    expect(allowed([allow('from=fe80::/10')], { client: 'fe80::1%eth0' })).toBe(true);
  });

  it('matches a to CIDR on an IP destHost or on the resolved address', () => {
    const rules = [deny('to=192.168.0.0/16,fd00::/8')];
    expect(allowed(rules, { destHost: '192.168.1.1' })).toBe(false);
    expect(allowed(rules, { destHost: '::ffff:192.168.1.1' })).toBe(false);
    expect(allowed(rules, { destHost: 'fd12::1' })).toBe(false);
    expect(allowed(rules, { destHost: '8.8.8.8' })).toBe(true);
    expect(allowed(rules, { destHost: 'nas.lan' })).toBe(true);
    expect(allowed(rules, { destHost: 'nas.lan', destAddress: '192.168.1.5' })).toBe(false);
    expect(allowed(rules, { destHost: 'nas.lan', destAddress: 'fd00::5' })).toBe(false);
    expect(allowed(rules, { destHost: 'nas.lan', destAddress: '1.1.1.1' })).toBe(true);
  });

  it('matches globs case-insensitively, only against names', () => {
    const sub = [allow('to=*.example.com')];
    expect(allowed(sub, { destHost: 'www.example.com' })).toBe(true);
    expect(allowed(sub, { destHost: 'a.b.EXAMPLE.com.' })).toBe(true);
    expect(allowed(sub, { destHost: 'example.com' })).toBe(false);
    expect(allowed(sub, { destHost: 'badexample.com' })).toBe(false);
    expect(allowed(sub, { destHost: 'example.com.evil.net' })).toBe(false);
    const exact = [allow('to=Example.com.')];
    expect(allowed(exact, { destHost: 'EXAMPLE.COM' })).toBe(true);
    expect(allowed(exact, { destHost: 'www.example.com' })).toBe(false);
    // A glob never matches an IP, even one that resolved from a matching name.
    expect(allowed([allow('to=1.2.3.4.example.com')], { destHost: '1.2.3.4' })).toBe(false);
    expect(allowed([allow('to=*')], { destHost: '1.2.3.4' })).toBe(true);
  });

  it('matches ports, commands and users', () => {
    const rules = [allow('port=80,443,8000-8999 cmd=connect,bind user=alice')];
    const ok = { destPort: 8080, command: 'bind', user: 'alice' } as const;
    expect(allowed(rules, ok)).toBe(true);
    expect(allowed(rules, { ...ok, destPort: 8000 })).toBe(true);
    expect(allowed(rules, { ...ok, destPort: 8999 })).toBe(true);
    expect(allowed(rules, { ...ok, destPort: 9000 })).toBe(false);
    expect(allowed(rules, { ...ok, destPort: 81 })).toBe(false);
    expect(allowed(rules, { ...ok, command: 'udp' })).toBe(false);
    expect(allowed(rules, { ...ok, user: 'Alice' })).toBe(false);
    expect(allowed(rules, { ...ok, user: undefined })).toBe(false);
  });

  it('needs every key of a rule to match', () => {
    const rules = [deny('from=10.0.0.0/8 to=*.internal port=22')];
    expect(allowed(rules, { client: '10.0.0.1', destHost: 'db.internal', destPort: 22 })).toBe(false);
    expect(allowed(rules, { client: '10.0.0.1', destHost: 'db.internal', destPort: 23 })).toBe(true);
    expect(allowed(rules, { client: '11.0.0.1', destHost: 'db.internal', destPort: 22 })).toBe(true);
    expect(allowed(rules, { client: '10.0.0.1', destHost: 'db.external', destPort: 22 })).toBe(true);
  });

  it('lets the first matching rule win and reports it', () => {
    const first = deny('to=10.0.0.0/8');
    const second = allow('from=10.0.0.0/8');
    expect(evaluateRules([first, second], subject({ client: '10.0.0.1', destHost: '10.0.0.2' }))).toEqual({ allowed: false, rule: first });
    expect(evaluateRules([second, first], subject({ client: '10.0.0.1', destHost: '10.0.0.2' }))).toEqual({ allowed: true, rule: second });
  });

  it('defaults to allow with no allow rules and to deny once one exists', () => {
    expect(evaluateRules([], subject())).toEqual({ allowed: true });
    expect(evaluateRules([deny('port=25')], subject())).toEqual({ allowed: true });
    expect(evaluateRules([deny('port=25'), allow('port=25')], subject())).toEqual({ allowed: false });
  });

  it('denies after DNS a name that resolves into a denied network', () => {
    const rules = [deny('to=127.0.0.0/8,10.0.0.0/8,::1'), allow('from=192.0.2.0/24')];
    const before = subject({ destHost: 'rebind.attacker.example' });
    expect(evaluateRules(rules, before)).toEqual({ allowed: true, rule: rules[1] });
    expect(evaluateRules(rules, { ...before, destAddress: '127.0.0.1' })).toEqual({ allowed: false, rule: rules[0] });
    expect(evaluateRules(rules, { ...before, destAddress: '::ffff:10.9.9.9' })).toEqual({ allowed: false, rule: rules[0] });
    expect(evaluateRules(rules, { ...before, destAddress: '::1' })).toEqual({ allowed: false, rule: rules[0] });
    expect(evaluateRules(rules, { ...before, destAddress: '93.184.216.34' }).allowed).toBe(true);
  });
});

describe('hasClientAllowRule', () => {
  it('counts only allow rules that restrict the client to less than a whole family', () => {
    expect(hasClientAllowRule([])).toBe(false);
    expect(hasClientAllowRule([allow('')])).toBe(false);
    expect(hasClientAllowRule([allow('from=*')])).toBe(false);
    expect(hasClientAllowRule([allow('to=10.0.0.0/8')])).toBe(false);
    expect(hasClientAllowRule([deny('from=10.0.0.0/8')])).toBe(false);
    expect(hasClientAllowRule([allow('from=0.0.0.0/0')])).toBe(false);
    expect(hasClientAllowRule([allow('from=10.0.0.0/8,::/0')])).toBe(false);
    expect(hasClientAllowRule([deny('port=25'), allow('from=127.0.0.1')])).toBe(true);
    expect(hasClientAllowRule([allow('from=::1 port=1080')])).toBe(true);
  });
});

describe('evaluateRules against a reference (deny rules of random CIDRs)', () => {
  const v4 = (n: bigint) => [24n, 16n, 8n, 0n].map((s) => (n >> s) & 0xffn).join('.');
  const v6 = (n: bigint) => Array.from({ length: 8 }, (_, i) => ((n >> BigInt(112 - 16 * i)) & 0xffffn).toString(16)).join(':');
  const family = fc.constantFrom(4 as const, 6 as const);
  const cidr = family.chain((f) =>
    fc.record({ f: fc.constant(f), addr: fc.bigInt({ min: 0n, max: f === 4 ? 2n ** 32n - 1n : 2n ** 128n - 1n }), prefix: fc.integer({ min: 0, max: f === 4 ? 32 : 128 }) }),
  );
  // Reference: node's BlockList, one per CIDR, asked only about addresses of the CIDR's own family.
  const reference = (nets: Array<{ f: 4 | 6; text: string; prefix: number }>, ip: string, f: 4 | 6) =>
    nets.some((n) => {
      if (n.f !== f) return false;
      const list = new net.BlockList();
      list.addSubnet(n.text, n.prefix, f === 4 ? 'ipv4' : 'ipv6');
      return list.check(ip, f === 4 ? 'ipv4' : 'ipv6');
    });

  it('allows exactly the clients and destinations outside every CIDR', () => {
    fc.assert(
      fc.property(fc.array(cidr, { minLength: 1, maxLength: 5 }), fc.nat(), family, fc.bigInt({ min: 0n, max: 2n ** 128n - 1n }), fc.boolean(), (cidrs, pick, f, bits, useTo) => {
        const nets = cidrs.map((c) => ({ f: c.f, prefix: c.prefix, text: c.f === 4 ? v4(c.addr) : v6(c.addr) }));
        // Half the time aim inside one of the networks so that matches are common, not a fluke.
        const target = nets[pick % nets.length];
        const width = f === 4 ? 32n : 128n;
        let value = bits & ((1n << width) - 1n);
        if (pick % 2 === 0 && target.f === f) {
          const host = width - BigInt(target.prefix);
          const base = cidrs[pick % nets.length].addr;
          value = ((base >> host) << host) | (value & ((1n << host) - 1n));
        }
        const ip = f === 4 ? v4(value) : v6(value);
        // Mapped addresses count as IPv4 by design; BlockList would disagree only on those.
        fc.pre(f === 4 || value >> 32n !== 0xffffn);
        const rules = nets.map((n) => parseRule('deny', `${useTo ? 'to' : 'from'}=${n.text}/${n.prefix}`));
        const got = evaluateRules(rules, subject(useTo ? { destHost: ip } : { client: ip })).allowed;
        expect(got).toBe(!reference(nets, ip, f));
      }),
      { numRuns: 2000 },
    );
  });
});

describe('the host guard: which destinations are the proxy host', () => {
  // An interface list as a cloud VM might have: a private IPv4, a global IPv6, a docker bridge.
  const own = ['10.0.3.15', '2001:db8:1::15', '172.17.0.1', 'fe80::1'];
  const list = hostBlockList(own);
  const covers = (ip: string) => blockListCovers(list, ip);

  it('covers loopback, 0.0.0.0/8, link-local (metadata), ::1, :: and fe80::/10, in every spelling', () => {
    for (const ip of [
      '127.0.0.1', '127.255.255.254', '::1', '0:0:0:0:0:0:0:1',
      '0.0.0.0', '0.1.2.3', '::', '::0.0.0.0',
      '169.254.169.254', '169.254.0.1', 'fe80::1', 'fe80::a:b%eth0', 'febf:ffff::1',
      // IPv4-mapped IPv6, dotted and hex: a BlockList checks them against its IPv4 entries.
      '::ffff:127.0.0.1', '::FFFF:7f00:1', '::ffff:169.254.169.254', '::ffff:a9fe:a9fe', '::ffff:0.0.0.0',
    ]) {
      expect(covers(ip), ip).toBe(true);
    }
  });

  it('covers the interface addresses, mapped or not, and only those', () => {
    for (const ip of ['10.0.3.15', '::ffff:10.0.3.15', '2001:db8:1::15', '172.17.0.1']) expect(covers(ip), ip).toBe(true);
    for (const ip of ['10.0.3.16', '2001:db8:1::16', '172.17.0.2']) expect(covers(ip), ip).toBe(false);
  });

  it('does not cover the neighbours of the ranges, other addresses or names', () => {
    for (const ip of [
      '128.0.0.1', '126.255.255.255', '1.0.0.0', '169.253.255.255', '169.255.0.0', '::2', '::ffff:128.0.0.1',
      'fec0::1', 'fe7f:ffff::1', '8.8.8.8', '2606:4700::1111', '10.0.0.1', 'localhost', 'example.com', '',
    ]) {
      expect(covers(ip), ip).toBe(false);
    }
  });

  it('matches a BlockList built from the stated CIDRs on random addresses (mapped included)', () => {
    const reference = new net.BlockList();
    for (const [network, prefix, family] of HOST_RANGES) reference.addSubnet(network, prefix, family);
    const empty = hostBlockList([]);
    const v6 = (n: bigint) => Array.from({ length: 8 }, (_, i) => ((n >> BigInt(112 - 16 * i)) & 0xffffn).toString(16)).join(':');
    fc.assert(
      fc.property(fc.oneof(fc.ipV4(), fc.ipV6(), fc.ipV4().map((ip) => `::ffff:${ip}`), fc.bigInt({ min: 0n, max: 2n ** 10n }).map((n) => v6((0xfe80n << 112n) | n))), (ip) => {
        const family = net.isIPv4(ip) ? 'ipv4' : 'ipv6';
        expect(blockListCovers(empty, ip)).toBe(reference.check(ip, family));
      }),
      { numRuns: 3000 },
    );
  });

  it('reads the interfaces once per refresh period and keeps the last reading when they cannot be read', () => {
    let now = 0;
    let reads = 0;
    let addresses: string[] | Error = ['192.0.2.7'];
    const isHost = hostAddressTest({
      addresses: () => {
        reads++;
        if (addresses instanceof Error) throw addresses;
        return addresses;
      },
      refreshMs: 1000,
      now: () => now,
    });
    expect(isHost('192.0.2.7')).toBe(true);
    addresses = ['192.0.2.8'];
    expect(isHost('192.0.2.8')).toBe(false);
    expect(reads).toBe(1);
    now = 1000;
    expect(isHost('192.0.2.8')).toBe(true);
    expect(isHost('192.0.2.7')).toBe(false);
    addresses = new Error('uv_interface_addresses');
    now = 2000;
    expect(isHost('192.0.2.8')).toBe(true);
    expect(isHost('127.0.0.1')).toBe(true);
    expect(reads).toBe(3);
  });
});

describe('evaluateAccess: the host guard behind the rules', () => {
  const isHost = (ip: string) => blockListCovers(hostBlockList(['192.0.2.2']), ip);
  const access = (rules: Rule[], over: Partial<RuleSubject>) => evaluateAccess(rules, subject(over), isHost);

  it('denies every host destination by default, after resolution and as a literal, and says why', () => {
    for (const destAddress of ['127.0.0.1', '::1', '::ffff:127.0.0.1', '169.254.169.254', 'fe80::1', '0.0.0.0', '::', '192.0.2.2']) {
      expect(access([], { destHost: 'rebind.example', destAddress }), destAddress).toEqual({ allowed: false, hostProtected: true });
      expect(access([], { destHost: destAddress }), destAddress).toEqual({ allowed: false, hostProtected: true });
    }
    expect(access([], { destHost: 'example.com', destAddress: '93.184.216.34' })).toEqual({ allowed: true });
    // Before resolution a name is no address yet: each address is checked once known.
    expect(access([], { destHost: 'localhost' })).toEqual({ allowed: true });
    for (const command of ['connect', 'bind', 'udp'] as const) {
      expect(access([], { command, destHost: '127.0.0.1' }).allowed, command).toBe(false);
    }
  });

  it('without a guard, or for other destinations, answers as evaluateRules', () => {
    const rules = [deny('port=25')];
    expect(evaluateAccess(rules, subject({ destHost: '127.0.0.1' }))).toEqual(evaluateRules(rules, subject({ destHost: '127.0.0.1' })));
    expect(access(rules, { destHost: '127.0.0.1', destPort: 25 })).toEqual({ allowed: false, rule: rules[0] });
    expect(access(rules, { destHost: '8.8.8.8' })).toEqual({ allowed: true });
  });

  it('is lifted for an address by the deciding allow rule that names it in to= (IP or CIDR)', () => {
    const rules = [allow('to=127.0.0.1 port=8080'), allow('from=192.0.2.0/24')];
    expect(access(rules, { destHost: '127.0.0.1', destPort: 8080 })).toEqual({ allowed: true, rule: rules[0] });
    expect(access(rules, { destHost: '::ffff:127.0.0.1', destPort: 8080 })).toEqual({ allowed: true, rule: rules[0] });
    expect(access(rules, { destHost: 'localhost', destAddress: '127.0.0.1', destPort: 8080 })).toEqual({ allowed: true, rule: rules[0] });
    // Another port, another loopback address, or ::1 (which the rule does not name): the default holds.
    expect(access(rules, { destHost: '127.0.0.1', destPort: 8081 })).toEqual({ allowed: false, hostProtected: true });
    expect(access(rules, { destHost: '127.0.0.2', destPort: 8080 })).toEqual({ allowed: false, hostProtected: true });
    expect(access(rules, { destHost: 'localhost', destAddress: '::1', destPort: 8080 })).toEqual({ allowed: false, hostProtected: true });
    const metadata = [allow('to=169.254.169.254/32 port=80')];
    expect(access(metadata, { destHost: '169.254.169.254', destPort: 80 }).allowed).toBe(true);
    expect(access(metadata, { destHost: '169.254.169.253', destPort: 80 }).allowed).toBe(false);
    expect(access([allow('to=fe80::/10')], { destHost: 'fe80::1%eth0' }).allowed).toBe(true);
    expect(access([allow('to=::1')], { destHost: '::1' }).allowed).toBe(true);
    expect(access([allow('to=192.0.2.0/24')], { destHost: '192.0.2.2' }).allowed).toBe(true);
  });

  it('is not lifted by an allow rule that does not name the address: from=, port=, *, /0, a host name', () => {
    for (const text of ['from=192.0.2.0/24', 'port=8080', '*', 'cmd=connect', 'to=0.0.0.0/0', 'to=::/0,0.0.0.0/0', 'to=localhost', 'to=*.example']) {
      // The name resolved to loopback is one each rule matches: only the guard can deny it.
      const destHost = text === 'to=*.example' ? 'rebind.example' : 'localhost';
      expect(access([allow(text)], { destHost, destAddress: '127.0.0.1', destPort: 8080 }), text).toEqual({ allowed: false, hostProtected: true });
      expect(access([allow(text)], { destHost: '169.254.169.254', destPort: 8080 }).allowed, text).toBe(false);
    }
  });

  it('asks the first matching rule: a broader allow before the naming one keeps the default', () => {
    const naming = allow('to=127.0.0.1');
    const broad = allow('from=192.0.2.0/24');
    expect(access([naming, broad], { destHost: '127.0.0.1' }).allowed).toBe(true);
    expect(access([broad, naming], { destHost: '127.0.0.1' })).toEqual({ allowed: false, hostProtected: true });
    // A deny that matches first still denies, and says which rule.
    const no = deny('port=22');
    expect(access([no, naming], { destHost: '127.0.0.1', destPort: 22 })).toEqual({ allowed: false, rule: no });
  });

  it('checks a BIND peer, not a BIND to 0.0.0.0 or :: (any peer)', () => {
    for (const destHost of ['0.0.0.0', '::', '::ffff:0.0.0.0']) {
      expect(access([], { command: 'bind', destHost }), destHost).toEqual({ allowed: true });
      expect(access([], { command: 'bind', destHost, destAddress: '127.0.0.1' }), destHost).toEqual({ allowed: false, hostProtected: true });
      expect(access([], { command: 'connect', destHost }), destHost).toEqual({ allowed: false, hostProtected: true });
    }
    expect(access([], { command: 'bind', destHost: '127.0.0.1' })).toEqual({ allowed: false, hostProtected: true });
    expect(access([allow('to=127.0.0.1 cmd=bind')], { command: 'bind', destHost: '0.0.0.0', destAddress: '127.0.0.1' }).allowed).toBe(true);
  });

  it('namesAddress: IP and CIDR entries, mapped spellings, never /0 or names', () => {
    expect(namesAddress(allow('to=127.0.0.0/8'), '127.9.9.9')).toBe(true);
    expect(namesAddress(allow('to=::ffff:127.0.0.1'), '127.0.0.1')).toBe(true);
    expect(namesAddress(allow('to=127.0.0.1'), '::ffff:7f00:1')).toBe(true);
    expect(namesAddress(allow('to=127.0.0.1'), '127.0.0.2')).toBe(false);
    expect(namesAddress(allow('to=0.0.0.0/0'), '127.0.0.1')).toBe(false);
    expect(namesAddress(allow('to=localhost'), '127.0.0.1')).toBe(false);
    expect(namesAddress(allow(''), '127.0.0.1')).toBe(false);
  });
});

describe('protectsHost', () => {
  const at = (...hosts: string[]) => hosts.map((host) => ({ host, port: 1080 }));
  it("'auto' (the default) protects when any listener is beyond loopback", () => {
    expect(protectsHost({ listen: at('127.0.0.1') })).toBe(false);
    expect(protectsHost({ listen: at('127.0.0.1', '::1', 'localhost', '127.1.2.3') })).toBe(false);
    expect(protectsHost({ listen: at('0.0.0.0') })).toBe(true);
    expect(protectsHost({ listen: at('::') })).toBe(true);
    expect(protectsHost({ listen: at('127.0.0.1', '192.0.2.2') })).toBe(true);
    expect(protectsHost({ listen: at('proxy.example') })).toBe(true);
    expect(protectsHost({ listen: at('0.0.0.0'), protectHost: 'auto' })).toBe(true);
  });

  it('true and false override it', () => {
    expect(protectsHost({ listen: at('127.0.0.1'), protectHost: true })).toBe(true);
    expect(protectsHost({ listen: at('0.0.0.0'), protectHost: false })).toBe(false);
  });
});
