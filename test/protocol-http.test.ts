import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  encodeHttpResponse,
  httpStatusForErrno,
  parseAbsoluteUri,
  parseBasicAuth,
  parseConnectHead,
  parseConnectTarget,
  stripHopByHop,
  MAX_HEAD_BYTES,
} from '../src/protocol/http.js';

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

describe('parseConnectHead', () => {
  const head = (text: string) => Buffer.from(text, 'latin1');
  const plain = 'CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\nProxy-Authorization: Basic YWxpY2U6czNjcmV0\r\n\r\n';

  it('reads a plain CONNECT head: target, credentials, and where the tunnel bytes start', () => {
    const buf = Buffer.concat([head(plain), head('\x16\x03\x01tls')]);
    expect(parseConnectHead(buf)).toEqual({
      status: 'ok',
      consumed: plain.length,
      head: { target: 'example.com:443', proxyAuthorization: 'Basic YWxpY2U6czNjcmV0' },
    });
    expect(parseConnectHead(head('CONNECT [::1]:22 HTTP/1.0\r\n\r\n'))).toMatchObject({ head: { target: '[::1]:22', proxyAuthorization: undefined } });
  });

  it('is incomplete until the empty line, whatever the split', () => {
    for (let cut = 0; cut < plain.length; cut++) {
      expect(parseConnectHead(head(plain.slice(0, cut))), `first ${cut} bytes`).toEqual({ status: 'incomplete' });
    }
  });

  it('leaves every other request, and a CONNECT in any other form, to Node\'s parser (head null, nothing consumed)', () => {
    const others = [
      'GET http://example.com/ HTTP/1.1\r\n\r\n',
      'G',
      'CONNECT example.com:443 HTTP/2.0\r\n\r\n',
      'CONNECT  example.com:443 HTTP/1.1\r\n\r\n',
      'CONNECT example.com:443 HTTP/1.1\nHost: x\n\n\r\n\r\n',
      'CONNECT example.com:443 HTTP/1.1\r\nHost : x\r\n\r\n',
      'CONNECT example.com:443 HTTP/1.1\r\n folded\r\n\r\n',
      'CONNECT example.com:443 HTTP/1.1\r\nContent-Length: 5\r\n\r\n',
      'CONNECT example.com:443 HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n',
      'CONNECT example.com:443 HTTP/1.1\r\nProxy-Authorization: a\r\nProxy-Authorization: b\r\n\r\n',
      'CONNECT example.com:443 HTTP/1.1\r\nX: caf\xe9\r\n\r\n',
      'CONNECT example.com:443 HTTP/1.1\r\nX: a\rb\r\n\r\n',
    ];
    for (const text of others) expect(parseConnectHead(head(text)), JSON.stringify(text)).toEqual({ status: 'ok', consumed: 0, head: null });
  });

  it('gives a head past the size limit to Node\'s parser (which answers 431)', () => {
    const long = head(`CONNECT example.com:443 HTTP/1.1\r\nX: ${'a'.repeat(MAX_HEAD_BYTES)}`);
    expect(parseConnectHead(long)).toEqual({ status: 'ok', consumed: 0, head: null });
  });

  it('never throws, and never consumes past what it was given (property)', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 300 }), fc.boolean(), (bytes, prefixed) => {
        const buf = Buffer.concat([prefixed ? head('CONNECT ') : Buffer.alloc(0), Buffer.from(bytes)]);
        const result = parseConnectHead(buf);
        if (result.status === 'ok') {
          expect(result.consumed).toBeLessThanOrEqual(buf.length);
          if (result.head) expect(buf.subarray(result.consumed - 4, result.consumed).toString('latin1')).toBe('\r\n\r\n');
        }
      }),
    );
  });
});
