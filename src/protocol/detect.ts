// Which protocol a connection speaks, from its first byte: one listener serves SOCKS4, SOCKS5 and
// HTTP, and the first byte alone tells them apart (no SOCKS version byte is a printable letter).

export type DetectedProtocol = 'socks4' | 'socks5' | 'http' | 'tls' | 'unknown';

/** TLS record content type 22 (handshake): a client speaking HTTPS or TLS straight to the port. */
export const TLS_HANDSHAKE = 0x16;

/**
 * 'tls' and 'unknown' get no protocol reply (there is none to give in a language the client speaks):
 * the server closes. HTTP methods are tokens, upper case in practice (RFC 9110 9.1: case-sensitive,
 * all registered methods are upper case), so only A-Z starts a request we would serve.
 */
export function detectProtocol(firstByte: number): DetectedProtocol {
  if (firstByte === 0x04) return 'socks4';
  if (firstByte === 0x05) return 'socks5';
  if (firstByte >= 0x41 && firstByte <= 0x5a) return 'http';
  if (firstByte === TLS_HANDSHAKE) return 'tls';
  return 'unknown';
}
