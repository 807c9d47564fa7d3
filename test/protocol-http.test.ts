import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  encodeHttpResponse,
  httpStatusForErrno,
  parseAbsoluteUri,
  parseBasicAuth,
  parseConnectTarget,
  parseProxyRequestHead,
  stripHopByHop,
} from '../src/protocol/http.js';
import { expectError, expectMessage } from './protocol-helpers.js';

const head = (text: string) => Buffer.from(text, 'latin1');
const parse = (buf: Buffer) => parseProxyRequestHead(buf);

describe('parseProxyRequestHead', () => {
  it('parses CONNECT, whole, byte by byte and coalesced with tunnel bytes', () => {
    const ok = expectMessage(parse, head('CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\nProxy-Authorization: Basic YTpi\r\n\r\n'));
    expect(ok.request).toEqual({
      method: 'CONNECT',
      target: 'example.com:443',
      version: 'HTTP/1.1',
      headers: [
        ['Host', 'example.com:443'],
        ['Proxy-Authorization', 'Basic YTpi'],
      ],
    });
  });

  it('keeps header case and order, trims OWS, allows repeats and empty values', () => {
    const ok = expectMessage(parse, head('GET http://a/ HTTP/1.0\r\nX-B:  2 \r\nx-a:\t1\t\r\nX-B: 3\r\nEmpty:\r\nSpaces: a  b\r\n\r\n'));
    expect(ok.request.headers).toEqual([
      ['X-B', '2'],
      ['x-a', '1'],
      ['X-B', '3'],
      ['Empty', ''],
      ['Spaces', 'a  b'],
    ]);
    expect(ok.request.version).toBe('HTTP/1.0');
  });

  it('tolerates bare LF line endings, mixed endings and leading blank lines', () => {
    expect(expectMessage(parse, head('GET http://a/ HTTP/1.1\nHost: a\n\n')).request.headers).toEqual([['Host', 'a']]);
    expect(expectMessage(parse, head('GET http://a/ HTTP/1.1\r\nHost: a\n\r\n')).request.method).toBe('GET');
    expect(expectMessage(parse, head('\r\n\nGET http://a/ HTTP/1.1\r\n\r\n')).request.target).toBe('http://a/');
  });

  it('keeps obs-text bytes in values', () => {
    expect(expectMessage(parse, head('GET http://a/ HTTP/1.1\r\nX: caf\xe9\r\n\r\n')).request.headers).toEqual([['X', 'caf\xe9']]);
  });

  it('answers 400 to malformed heads, as soon as a line proves them bad', () => {
    const bad = [
      'GET  http://a/ HTTP/1.1\r\n\r\n', // two spaces
      'GET http://a/\r\n\r\n', // HTTP/0.9 form
      'G(T http://a/ HTTP/1.1\r\n\r\n',
      'GET http://a/ HTTP/1.1 extra\r\n\r\n',
      'GET http://a/ HTTP/x.1\r\n\r\n',
      'GET http://a/ http/1.1\r\n\r\n',
      'GET http://a/\x7f HTTP/1.1\r\n\r\n',
      'GET http://a/ HTTP/1.1\r\nHost : a\r\n\r\n', // space before colon
      'GET http://a/ HTTP/1.1\r\n: a\r\n\r\n',
      'GET http://a/ HTTP/1.1\r\nNoColon\r\n\r\n',
      'GET http://a/ HTTP/1.1\r\nX: a\r\n folded\r\n\r\n',
      'GET http://a/ HTTP/1.1\r\nX: a\rb\r\n\r\n', // bare CR
      'GET http://a/ HTTP/1.1\r\nX: a\x00b\r\n\r\n',
      '\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03', // a TLS ClientHello: refused before any LF
    ];
    for (const text of bad) expectError(parse, head(text), 'ERR_MALFORMED', 400);
  });

  it('answers 505 to other HTTP major versions', () => {
    expectError(parse, head('GET http://a/ HTTP/2.0\r\n\r\n'), 'ERR_BAD_VERSION', 505);
    expectError(parse, head('GET http://a/ HTTP/0.9\r\n\r\n'), 'ERR_BAD_VERSION', 505);
  });

  it('answers 431 past the size and header-count limits, without waiting for the end', () => {
    const limits = { maxHeadBytes: 64, maxHeaders: 2 };
    const fits = head(`GET http://a/ HTTP/1.1\r\nX: ${'a'.repeat(64 - 31)}\r\n\r\n`);
    expect(fits).toHaveLength(64);
    expect(parseProxyRequestHead(fits, limits)).toMatchObject({ status: 'ok', consumed: 64 });
    const over = head(`GET http://a/ HTTP/1.1\r\nX: ${'a'.repeat(64 - 30)}\r\n\r\n`);
    expect(parseProxyRequestHead(over, limits)).toMatchObject({ status: 'error', code: 'ERR_HEAD_TOO_LARGE', reply: 431 });
    expect(parseProxyRequestHead(over.subarray(0, 63), limits).status).toBe('incomplete');
    expect(parseProxyRequestHead(head('GET http://a/ HTTP/1.1\r\n' + 'a'.repeat(100)), limits)).toMatchObject({ code: 'ERR_HEAD_TOO_LARGE' });
    expectError((b) => parseProxyRequestHead(b, limits), head('GET http://a/ HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n'), 'ERR_TOO_MANY_HEADERS', 431);
    expect(parseProxyRequestHead(head('GET http://a/ HTTP/1.1\r\nA: 1\r\nB: 2\r\n\r\n'), limits).status).toBe('ok');
    expect(parse(head(`GET http://a/ HTTP/1.1\r\nX: ${'a'.repeat(20000)}`))).toMatchObject({ reply: 431 });
  });

  it('never throws, never consumes past the input or the limit', () => {
    const chars = fc.constantFrom('GET', 'CONNECT', ' ', '\r', '\n', ':', 'a', 'http://x/', 'HTTP/1.1', 'HTTP/2.0', '\t', '\0', '\xe9', 'Host');
    const inputs = fc.oneof(
      fc.uint8Array({ maxLength: 300 }).map((a) => Buffer.from(a)),
      fc.array(chars, { maxLength: 60 }).map((parts) => head(parts.join(''))),
    );
    fc.assert(
      fc.property(inputs, fc.integer({ min: 1, max: 200 }), fc.integer({ min: 0, max: 10 }), (buf, maxHeadBytes, maxHeaders) => {
        const limits = { maxHeadBytes, maxHeaders };
        const result = parseProxyRequestHead(buf, limits);
        if (result.status === 'ok') {
          expect(result.consumed).toBeLessThanOrEqual(Math.min(buf.length, maxHeadBytes));
          expect(parseProxyRequestHead(buf.subarray(0, result.consumed), limits)).toEqual(result);
          expect(result.request.headers.length).toBeLessThanOrEqual(maxHeaders);
        }
        if (result.status === 'error') expect([400, 431, 505]).toContain(result.reply);
      }),
      { numRuns: 3000 },
    );
  });

  it('reads back any well-formed head', () => {
    const token = fc.stringMatching(/^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,12}$/);
    const value = fc.stringMatching(/^[\x21-\x7e]([\x20-\x7e]{0,20}[\x21-\x7e])?$/);
    fc.assert(
      fc.property(token, fc.array(fc.tuple(token, value), { maxLength: 20 }), fc.boolean(), (method, headers, bareLf) => {
        const eol = bareLf ? '\n' : '\r\n';
        const text = `${method} http://h/ HTTP/1.1${eol}${headers.map(([n, v]) => `${n}: ${v}${eol}`).join('')}${eol}`;
        const result = parse(head(text + 'body'));
        expect(result).toEqual({ status: 'ok', request: { method, target: 'http://h/', version: 'HTTP/1.1', headers }, consumed: text.length });
      }),
    );
  });
});

describe('parseConnectTarget', () => {
  it('splits host:port and [v6]:port', () => {
    expect(parseConnectTarget('example.com:443')).toEqual({ status: 'ok', host: 'example.com', port: 443 });
    expect(parseConnectTarget('10.0.0.1:1')).toEqual({ status: 'ok', host: '10.0.0.1', port: 1 });
    expect(parseConnectTarget('[2001:db8::1]:65535')).toEqual({ status: 'ok', host: '2001:db8::1', port: 65535 });
  });

  it('refuses a missing or bad port and ambiguous hosts with 400', () => {
    for (const target of ['example.com', 'example.com:', 'example.com:0', 'example.com:65536', 'example.com:8o', 'example.com:-1', ':80', '2001:db8::1:443', '[2001:db8::1]', '[nothost]:80', 'a b:80', 'user@host:80x', 'host:123456']) {
      expect(parseConnectTarget(target), target).toMatchObject({ status: 'error', code: 'ERR_BAD_TARGET', reply: 400 });
    }
  });
});

describe('parseAbsoluteUri', () => {
  it('splits http URIs into host, port and the origin-form path, unnormalised', () => {
    expect(parseAbsoluteUri('http://example.com/a/b?c=d')).toEqual({ status: 'ok', host: 'example.com', port: 80, path: '/a/b?c=d' });
    expect(parseAbsoluteUri('http://example.com')).toMatchObject({ port: 80, path: '/' });
    expect(parseAbsoluteUri('http://example.com?q')).toMatchObject({ path: '/?q' });
    expect(parseAbsoluteUri('HTTP://Example.com:8080/%7e/../x')).toEqual({ status: 'ok', host: 'Example.com', port: 8080, path: '/%7e/../x' });
    expect(parseAbsoluteUri('http://[::1]:81/')).toMatchObject({ host: '::1', port: 81 });
    expect(parseAbsoluteUri('http://[::1]/')).toMatchObject({ host: '::1', port: 80 });
    expect(parseAbsoluteUri('http://a:/x')).toMatchObject({ port: 80, path: '/x' });
    expect(parseAbsoluteUri('http://a/x#frag')).toMatchObject({ path: '/x' });
  });

  it('refuses https:// and other schemes, userinfo, and bad authorities', () => {
    expect(parseAbsoluteUri('https://example.com/')).toMatchObject({ status: 'error', code: 'ERR_UNSUPPORTED_SCHEME', reply: 400 });
    expect(parseAbsoluteUri('ftp://example.com/')).toMatchObject({ code: 'ERR_UNSUPPORTED_SCHEME' });
    for (const target of ['/origin-form', 'example.com:80', 'http:/x', 'http://user:pw@a/', 'http:///x', 'http://a:99999/', 'http://a:b/', 'http://::1/', 'http://[x]/']) {
      expect(parseAbsoluteUri(target), target).toMatchObject({ status: 'error', code: 'ERR_BAD_TARGET', reply: 400 });
    }
  });
});

describe('parseBasicAuth', () => {
  const b64 = (s: string) => Buffer.from(s).toString('base64');

  it('decodes user and password, splitting at the first colon', () => {
    expect(parseBasicAuth(`Basic ${b64('alice:hunter2')}`)).toEqual({ user: 'alice', pass: 'hunter2' });
    expect(parseBasicAuth(`basic ${b64('a:b:c')}`)).toEqual({ user: 'a', pass: 'b:c' });
    expect(parseBasicAuth(`  BASIC\t${b64(':')}  `)).toEqual({ user: '', pass: '' });
    expect(parseBasicAuth(`Basic ${b64('jürgen:pä')}`)).toEqual({ user: 'jürgen', pass: 'pä' });
  });

  it('returns null for anything else', () => {
    for (const value of ['', 'Basic', 'Basic ', `Bearer ${b64('a:b')}`, `Basic ${b64('nocolon')}`, 'Basic !!!!', `Basic ${b64('a:b')} extra`, `Basic${b64('a:b')}`]) {
      expect(parseBasicAuth(value), value).toBeNull();
    }
  });

  it('round-trips any credentials', () => {
    fc.assert(
      fc.property(fc.string().filter((s) => !s.includes(':')), fc.string(), (user, pass) => {
        fc.pre(Buffer.from(user + pass).toString() === user + pass); // lone surrogates do not survive UTF-8
        expect(parseBasicAuth(`Basic ${b64(`${user}:${pass}`)}`)).toEqual({ user, pass });
      }),
    );
  });
});

describe('stripHopByHop', () => {
  it('drops hop-by-hop headers and those Connection names, keeping order and framing headers', () => {
    const headers: Array<[string, string]> = [
      ['Host', 'a'],
      ['Connection', 'keep-alive, X-Private , close'],
      ['Proxy-Connection', 'keep-alive'],
      ['Keep-Alive', 'timeout=5'],
      ['Proxy-Authorization', 'Basic YTpi'],
      ['Proxy-Authenticate', 'Basic'],
      ['TE', 'trailers'],
      ['Trailer', 'X'],
      ['Upgrade', 'websocket'],
      ['x-private', '1'],
      ['Transfer-Encoding', 'chunked'],
      ['Accept', '*/*'],
    ];
    expect(stripHopByHop(headers)).toEqual([
      ['Host', 'a'],
      ['Transfer-Encoding', 'chunked'],
      ['Accept', '*/*'],
    ]);
    expect(headers).toHaveLength(12); // input untouched
  });

  it('keeps Transfer-Encoding and Content-Length even when Connection names them', () => {
    const headers: Array<[string, string]> = [
      ['connection', 'Transfer-Encoding, content-length'],
      ['Transfer-Encoding', 'chunked'],
      ['Content-Length', '5'],
    ];
    expect(stripHopByHop(headers)).toEqual(headers.slice(1));
  });
});

describe('encodeHttpResponse', () => {
  it('writes exact bytes', () => {
    expect(encodeHttpResponse(200, 'Connection Established').toString()).toBe('HTTP/1.1 200 Connection Established\r\n\r\n');
    expect(encodeHttpResponse(407, 'Proxy Authentication Required', [['Proxy-Authenticate', 'Basic realm="splicer"']], 'auth').toString()).toBe(
      'HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm="splicer"\r\nContent-Length: 4\r\n\r\nauth',
    );
    expect(encodeHttpResponse(502, 'Bad Gateway', { 'content-length': '0', Connection: 'close' }, '').toString()).toBe(
      'HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\nConnection: close\r\n\r\n',
    );
  });

  it('refuses header injection', () => {
    expect(() => encodeHttpResponse(200, 'OK\r\nX: y')).toThrow(TypeError);
    expect(() => encodeHttpResponse(200, 'OK', [['X', 'a\r\nSet-Cookie: b']])).toThrow(TypeError);
    expect(() => encodeHttpResponse(200, 'OK', [['Bad Name', 'a']])).toThrow(TypeError);
    expect(() => encodeHttpResponse(42, 'OK')).toThrow(RangeError);
  });

  it('maps upstream errors to statuses', () => {
    expect(httpStatusForErrno('ECONNREFUSED')).toBe(502);
    expect(httpStatusForErrno('ECONNRESET')).toBe(502);
    expect(httpStatusForErrno('ENOTFOUND')).toBe(502);
    expect(httpStatusForErrno('ETIMEDOUT')).toBe(504);
    expect(httpStatusForErrno('ERR_DENIED')).toBe(403);
  });
});

describe('limits', () => {
  it('fills limits that are not given from the defaults', () => {
    const text = `GET http://a/ HTTP/1.1\r\n${'X: 1\r\n'.repeat(100)}\r\n`;
    expect(parseProxyRequestHead(head(text), { maxHeadBytes: 600 })).toMatchObject({ code: 'ERR_HEAD_TOO_LARGE' });
    expect(parseProxyRequestHead(head(text)).status).toBe('ok');
    expect(parseProxyRequestHead(head(text.replace('\r\n\r\n', '\r\nX: 1\r\n\r\n')))).toMatchObject({ code: 'ERR_TOO_MANY_HEADERS' });
  });
});
