// Access rules for `splicer proxy --allow/--deny`: pure parsing and matching, no I/O.
// Model: Dante's client/socks rules and 3proxy's ACLs (from/to/port/command/user), first match wins.
import net from 'node:net';
import { ipBytes } from '../net/ip.js';

export type ProxyCommand = 'connect' | 'bind' | 'udp';

export interface RuleSubject {
  client: string;
  destHost: string;
  /** The resolved IP: rules are evaluated again once it is known, so a name cannot smuggle in a denied IP. */
  destAddress?: string;
  destPort: number;
  command: ProxyCommand;
  user?: string;
}

/**
 * Families never cross: an IPv4-mapped subject (::ffff:1.2.3.4) is IPv4, a mapped network written with
 * prefix >= 96 is stored as IPv4, and other IPv6 networks (::/0 included) meet only IPv6 subjects.
 */
export interface Cidr {
  kind: 'cidr';
  family: 4 | 6;
  network: bigint;
  prefix: number;
}

/** `example.com` matches that name only; `*.example.com` matches one or more labels below it. */
export interface HostGlob {
  kind: 'glob';
  suffix: string;
  subdomains: boolean;
}

export interface Rule {
  action: 'allow' | 'deny';
  /** The text it was parsed from, for logs. */
  source: string;
  from?: Cidr[];
  to?: Array<Cidr | HostGlob>;
  ports?: Array<[number, number]>;
  commands?: ProxyCommand[];
  users?: string[];
}

export class RuleError extends Error {
  readonly code = 'ERR_BAD_RULE';
  override name = 'RuleError';
}

const KEYS = ['from', 'to', 'port', 'cmd', 'user'] as const;
const COMMANDS: readonly ProxyCommand[] = ['connect', 'bind', 'udp'];
const LABEL = /^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?$/;

interface Ip {
  family: 4 | 6;
  value: bigint;
}

/** Any IP text Node accepts, zone id dropped; IPv4-mapped IPv6 comes back as IPv4. */
export function parseIp(text: string): Ip | undefined {
  const bytes = ipBytes(text);
  if (!bytes) return undefined;
  return { family: bytes.length === 4 ? 4 : 6, value: BigInt(`0x${bytes.toString('hex')}`) };
}

function parseCidr(item: string, fail: (why: string) => never): Cidr {
  const slash = item.indexOf('/');
  const addrText = slash < 0 ? item : item.slice(0, slash);
  const v6 = net.isIPv6(addrText) && !addrText.includes('%');
  if (!net.isIPv4(addrText) && !v6) fail(`"${addrText}" is not an IP address`);
  const ip = parseIp(addrText)!;
  const width = v6 ? 128 : 32;
  let prefix = width;
  if (slash >= 0) {
    const prefixText = item.slice(slash + 1);
    if (!/^\d{1,3}$/.test(prefixText) || Number(prefixText) > width) fail(`prefix "/${prefixText}" must be 0-${width}`);
    prefix = Number(prefixText);
  }
  // ::ffff:a.b.c.d/96+ is an IPv4 network spelled in IPv6; shorter prefixes stay IPv6-only.
  if (v6 && ip.family === 4) {
    if (prefix >= 96) prefix -= 96;
    else return maskCidr(6, (0xffffn << 32n) | ip.value, prefix);
  }
  return maskCidr(ip.family, ip.value, prefix);
}

// Host bits are dropped rather than refused, as Dante and iptables do: 10.1.2.3/8 means 10.0.0.0/8.
function maskCidr(family: 4 | 6, value: bigint, prefix: number): Cidr {
  const shift = BigInt((family === 4 ? 32 : 128) - prefix);
  return { kind: 'cidr', family, network: (value >> shift) << shift, prefix };
}

function cidrContains(cidr: Cidr, ip: Ip | undefined): boolean {
  if (!ip || ip.family !== cidr.family) return false;
  const shift = BigInt((cidr.family === 4 ? 32 : 128) - cidr.prefix);
  return ip.value >> shift === cidr.network >> shift;
}

function parseDestination(item: string, fail: (why: string) => never): Cidr | HostGlob {
  if (item.includes(':') || item.includes('/') || /^[\d.]+$/.test(item)) return parseCidr(item, fail);
  const name = item.toLowerCase().replace(/\.$/, '');
  const subdomains = name.startsWith('*.');
  const suffix = subdomains ? name.slice(2) : name;
  if (suffix.length > 253 || !suffix.split('.').every((label) => LABEL.test(label))) {
    fail(`"${item}" is not a host name, IP or CIDR (a "*" may only stand as the whole first label; write other names in punycode)`);
  }
  return { kind: 'glob', suffix, subdomains };
}

function parsePorts(item: string, fail: (why: string) => never): [number, number] {
  const m = /^(\d{1,5})(?:-(\d{1,5}))?$/.exec(item);
  if (!m) fail(`port "${item}" is not N or N-M`);
  const lo = Number(m[1]);
  const hi = m[2] === undefined ? lo : Number(m[2]);
  if (hi > 65535) fail(`port "${item}" is out of range (0-65535)`);
  if (lo > hi) fail(`port range "${item}" runs backwards`);
  return [lo, hi];
}

/** Parses `key=a,b key=c` (keys from, to, port, cmd, user); empty text or `*` matches everything. */
export function parseRule(action: 'allow' | 'deny', text: string): Rule {
  const rule: Rule = { action, source: `${action} ${text.trim() || '*'}` };
  const body = text.trim();
  if (body === '' || body === '*') return rule;
  const fail = (why: string): never => {
    throw new RuleError(`bad --${action} rule "${text}": ${why}`);
  };
  const seen = new Set<string>();
  for (const token of body.split(/\s+/)) {
    const eq = token.indexOf('=');
    if (eq <= 0) fail(`"${token}" is not key=value`);
    const key = token.slice(0, eq).toLowerCase() as (typeof KEYS)[number];
    if (!KEYS.includes(key)) fail(`unknown key "${token.slice(0, eq)}" (expected ${KEYS.join(', ')})`);
    // Repeating a key is ambiguous (AND or OR?), so ask for one comma-separated list.
    if (seen.has(key)) fail(`"${key}=" appears twice; give one comma-separated list`);
    seen.add(key);
    const items = token.slice(eq + 1).split(',');
    if (items.some((item) => item === '')) fail(`"${token}" has an empty value`);
    if (items.includes('*')) continue; // `key=*` places no restriction
    switch (key) {
      case 'from':
        rule.from = items.map((item) => parseCidr(item, fail));
        break;
      case 'to':
        rule.to = items.map((item) => parseDestination(item, fail));
        break;
      case 'port':
        rule.ports = items.map((item) => parsePorts(item, fail));
        break;
      case 'cmd':
        rule.commands = items.map((item) => {
          const cmd = item.toLowerCase() as ProxyCommand;
          return COMMANDS.includes(cmd) ? cmd : fail(`unknown command "${item}" (expected ${COMMANDS.join(', ')})`);
        });
        break;
      case 'user':
        rule.users = items;
        break;
    }
  }
  return rule;
}

function matchesDestination(to: Array<Cidr | HostGlob>, subject: RuleSubject): boolean {
  const hostIp = parseIp(subject.destHost);
  const resolved = subject.destAddress === undefined ? undefined : parseIp(subject.destAddress);
  const name = hostIp ? undefined : subject.destHost.toLowerCase().replace(/\.$/, '');
  return to.some((entry) => {
    if (entry.kind === 'cidr') return cidrContains(entry, hostIp) || cidrContains(entry, resolved);
    if (name === undefined) return false;
    return entry.subdomains ? name.endsWith(`.${entry.suffix}`) : name === entry.suffix;
  });
}

function matches(rule: Rule, subject: RuleSubject): boolean {
  if (rule.from && !rule.from.some((cidr) => cidrContains(cidr, parseIp(subject.client)))) return false;
  if (rule.ports && !rule.ports.some(([lo, hi]) => subject.destPort >= lo && subject.destPort <= hi)) return false;
  if (rule.commands && !rule.commands.includes(subject.command)) return false;
  if (rule.users && (subject.user === undefined || !rule.users.includes(subject.user))) return false;
  return !rule.to || matchesDestination(rule.to, subject);
}

/**
 * First matching rule wins. With none matching, any allow rule makes the default deny (a list of
 * allows is a whitelist); with only deny rules the default is allow. Call it once before DNS and
 * again with destAddress set: a `to` CIDR only sees a name's address on the second call.
 */
export function evaluateRules(rules: readonly Rule[], subject: RuleSubject): { allowed: boolean; rule?: Rule } {
  const rule = rules.find((r) => matches(r, subject));
  if (rule) return { allowed: rule.action === 'allow', rule };
  return { allowed: !rules.some((r) => r.action === 'allow') };
}

/** Whether `rule` names `address` in its `to=` by IP or CIDR. A /0 names no address in particular, and a host name is not a promise about where it points. */
export function namesAddress(rule: Rule, address: string): boolean {
  const ip = parseIp(address);
  return rule.to?.some((entry) => entry.kind === 'cidr' && entry.prefix > 0 && cidrContains(entry, ip)) ?? false;
}

export interface AccessVerdict {
  allowed: boolean;
  rule?: Rule;
  /** Denied because the destination is the proxy's own host, which no rule named. */
  hostProtected?: boolean;
}

/**
 * evaluateRules, then the host guard: when `isHost` is given, an address it covers is denied unless
 * the rule that allowed it (the first match) names that address in `to=`, so a bare `from=` or
 * `port=` allow does not open the host. The address is the resolved one, else destHost when it is an
 * IP. A BIND to 0.0.0.0 or :: names no peer; the peer is checked when it connects.
 */
export function evaluateAccess(rules: readonly Rule[], subject: RuleSubject, isHost?: (ip: string) => boolean): AccessVerdict {
  const verdict = evaluateRules(rules, subject);
  if (!verdict.allowed || !isHost) return verdict;
  const hostIp = parseIp(subject.destHost);
  const anyPeer = subject.command === 'bind' && hostIp?.value === 0n;
  const address = subject.destAddress ?? (hostIp && !anyPeer ? subject.destHost : undefined);
  if (address === undefined || !isHost(address)) return verdict;
  if (verdict.rule && namesAddress(verdict.rule, address)) return verdict;
  return { allowed: false, hostProtected: true };
}

/** True when some allow rule limits which clients it admits; a rule naming a /0 network admits a whole family, so it does not count. */
export function hasClientAllowRule(rules: readonly Rule[]): boolean {
  return rules.some((r) => r.action === 'allow' && r.from !== undefined && r.from.every((cidr) => cidr.prefix > 0));
}
