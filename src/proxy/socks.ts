// The SOCKS4/4a and SOCKS5 handshakes, as linear async flows over a HandshakeSession:
// greeting → auth → request → the command's handler. Every failure sends the
// protocol's full-length reply before closing.
import { encodeSocks4Reply, parseSocks4Request, SOCKS4_REPLY, socks4ReplyForErrno } from '../protocol/socks4.js';
import {
  AUTH_METHOD,
  encodeAuthStatus,
  encodeMethodSelection,
  encodeSocks5Reply,
  parseSocks5Auth,
  parseSocks5Greeting,
  parseSocks5Request,
  SOCKS5_REPLY,
  socks5ReplyForErrno,
} from '../protocol/socks5.js';
import type { Credentials } from './auth.js';
import type { HandshakeSession } from './session.js';
import { connectAndForward, type Handover, type Replies, type TunnelContext } from './connect-step.js';
import type { ProxyConnectionRecord } from './options.js';
import { isIPv4 } from 'node:net';
import { unmapIPv4 } from '../net/ip.js';

export interface SocksContext extends TunnelContext {
  credentials?: Credentials;
  allowEmptyCredentials: boolean;
  /** BIND and UDP ASSOCIATE, when the server offers them. */
  bind?: (session: HandshakeSession, dest: { host: string; port: number }, replies: BindReplies, record: ProxyConnectionRecord) => Promise<void>;
  udpAssociate?: (session: HandshakeSession, clientHint: { host: string; port: number }, record: ProxyConnectionRecord) => Promise<void>;
}

/** BIND sends two replies: where it listens, then who connected. */
export interface BindReplies extends Replies {
  listening(bound: { host: string; port: number }): Buffer;
}

const socks5Replies: BindReplies = {
  success: (bound) => ({ reply: encodeSocks5Reply(SOCKS5_REPLY.SUCCEEDED, bound), code: SOCKS5_REPLY.SUCCEEDED }),
  listening: (bound) => encodeSocks5Reply(SOCKS5_REPLY.SUCCEEDED, bound),
  failure: (code) => {
    const rep = code === 'EACCES' ? SOCKS5_REPLY.NOT_ALLOWED : socks5ReplyForErrno(code);
    return { reply: encodeSocks5Reply(rep), code: rep };
  },
};

// SOCKS4 replies carry an IPv4 address only; an IPv6 one is sent as 0.0.0.0 ("the server's address").
const v4 = (host: string) => (isIPv4(unmapIPv4(host)) ? host : '0.0.0.0');
const socks4Replies: BindReplies = {
  success: (bound) => ({ reply: encodeSocks4Reply(SOCKS4_REPLY.GRANTED, bound.port, v4(bound.host)), code: SOCKS4_REPLY.GRANTED }),
  listening: (bound) => encodeSocks4Reply(SOCKS4_REPLY.GRANTED, bound.port, v4(bound.host)),
  failure: (code) => {
    const cd = socks4ReplyForErrno(code || 'EIO');
    return { reply: encodeSocks4Reply(cd), code: cd };
  },
};

function credentialsOk(ctx: SocksContext, user: string | Buffer, pass: string | Buffer): boolean {
  if ((user.length === 0 || pass.length === 0) && !ctx.allowEmptyCredentials) return false;
  return ctx.credentials?.verify(user, pass) ?? false;
}

export async function serveSocks4(session: HandshakeSession, ctx: SocksContext, record: ProxyConnectionRecord): Promise<Handover | void> {
  record.protocol = 'socks4';
  const parsed = await session.read(parseSocks4Request);
  if (parsed.status === 'error') {
    record.outcome = 'bad-request';
    record.reply = parsed.reply;
    return session.close(encodeSocks4Reply(SOCKS4_REPLY.REJECTED));
  }
  const { request } = parsed;
  if (request.isSocks4a) record.protocol = 'socks4a';
  record.command = request.command;
  record.user = request.userId || undefined;
  // SOCKS4 has no passwords: when users are configured, it is refused.
  if (ctx.credentials?.required) {
    record.outcome = 'auth-failed';
    record.reply = SOCKS4_REPLY.REJECTED;
    return session.close(encodeSocks4Reply(SOCKS4_REPLY.REJECTED));
  }
  const dest = { host: request.host, port: request.port };
  if (request.command === 'bind') {
    if (!ctx.bind) return refuseCommand(session, record, encodeSocks4Reply(SOCKS4_REPLY.REJECTED), SOCKS4_REPLY.REJECTED);
    return ctx.bind(session, dest, socks4Replies, record);
  }
  return connectAndForward(session, { host: dest.host, port: dest.port, command: 'connect', user: record.user }, socks4Replies, ctx, record);
}

export async function serveSocks5(session: HandshakeSession, ctx: SocksContext, record: ProxyConnectionRecord): Promise<Handover | void> {
  record.protocol = 'socks5';
  const greeting = await session.read(parseSocks5Greeting);
  if (greeting.status === 'error') {
    record.outcome = 'bad-request';
    return session.close(encodeMethodSelection(AUTH_METHOD.NO_ACCEPTABLE));
  }
  const offers = greeting.methods;
  const authRequired = ctx.credentials?.required ?? false;
  // With no users configured, a client that offers only username/password is let in with any.
  const method = authRequired
    ? offers.includes(AUTH_METHOD.USERNAME_PASSWORD) ? AUTH_METHOD.USERNAME_PASSWORD : AUTH_METHOD.NO_ACCEPTABLE
    : offers.includes(AUTH_METHOD.NO_AUTH) ? AUTH_METHOD.NO_AUTH
    : offers.includes(AUTH_METHOD.USERNAME_PASSWORD) ? AUTH_METHOD.USERNAME_PASSWORD
    : AUTH_METHOD.NO_ACCEPTABLE;
  if (method === AUTH_METHOD.NO_ACCEPTABLE) {
    record.outcome = authRequired ? 'auth-failed' : 'bad-request';
    return session.close(encodeMethodSelection(AUTH_METHOD.NO_ACCEPTABLE));
  }
  session.write(encodeMethodSelection(method));

  if (method === AUTH_METHOD.USERNAME_PASSWORD) {
    const auth = await session.read(parseSocks5Auth);
    if (auth.status === 'error') {
      record.outcome = 'bad-request';
      return session.close(encodeAuthStatus(false));
    }
    record.user = auth.credentials.username;
    if (authRequired && !credentialsOk(ctx, auth.credentials.rawUsername, auth.credentials.rawPassword)) {
      record.outcome = 'auth-failed';
      return session.close(encodeAuthStatus(false));
    }
    session.write(encodeAuthStatus(true));
  }

  const parsed = await session.read(parseSocks5Request);
  if (parsed.status === 'error') {
    record.outcome = 'bad-request';
    record.reply = parsed.reply;
    return session.close(encodeSocks5Reply(parsed.reply));
  }
  const { request } = parsed;
  const dest = { host: request.host, port: request.port };
  switch (request.command) {
    case 'connect':
      record.command = 'connect';
      return connectAndForward(session, { host: dest.host, port: dest.port, command: 'connect', user: record.user }, socks5Replies, ctx, record);
    case 'bind':
      record.command = 'bind';
      if (!ctx.bind) return refuseCommand(session, record, encodeSocks5Reply(SOCKS5_REPLY.COMMAND_NOT_SUPPORTED), SOCKS5_REPLY.COMMAND_NOT_SUPPORTED);
      return ctx.bind(session, dest, socks5Replies, record);
    case 'udp-associate':
      record.command = 'udp';
      if (!ctx.udpAssociate) return refuseCommand(session, record, encodeSocks5Reply(SOCKS5_REPLY.COMMAND_NOT_SUPPORTED), SOCKS5_REPLY.COMMAND_NOT_SUPPORTED);
      return ctx.udpAssociate(session, dest, record);
  }
}

function refuseCommand(session: HandshakeSession, record: ProxyConnectionRecord, reply: Buffer, code: number): void {
  record.outcome = 'unsupported';
  record.reply = code;
  session.close(reply);
}
