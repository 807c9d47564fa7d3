// IP address text to the bytes that go into a packet header.
import net from 'node:net';

/**
 * 4 bytes for IPv4, 16 for IPv6. An IPv4-mapped IPv6 address (::ffff:a.b.c.d, what a
 * dual-stack socket reports for an IPv4 peer) gives the IPv4 bytes: on the wire that
 * connection was IPv4. A zone (fe80::1%eth0) is dropped; it is never on the wire.
 */
export function addressBytes(address: string): Buffer {
  const bare = address.replace(/%.*$/, '');
  if (net.isIPv4(bare)) return Buffer.from(bare.split('.').map(Number));
  if (!net.isIPv6(bare)) throw new TypeError(`"${address}" is not an IP address`);
  const bytes = ipv6Bytes(bare);
  const mapped = bytes.subarray(0, 10).every((b) => b === 0) && bytes[10] === 0xff && bytes[11] === 0xff;
  return mapped ? bytes.subarray(12) : bytes;
}

/** `text` must already be a valid IPv6 address (net.isIPv6), so at most one "::" and 8 groups. */
function ipv6Bytes(text: string): Buffer {
  let groupsText = text;
  const dotted = /(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(text);
  if (dotted) {
    const [a, b, c, d] = dotted.slice(1).map(Number);
    groupsText = `${text.slice(0, dotted.index)}${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
  }
  const groups = (part: string) => (part === '' ? [] : part.split(':').map((g) => parseInt(g, 16)));
  const [head, tail] = groupsText.split('::');
  const before = groups(head);
  const after = tail === undefined ? [] : groups(tail);
  const words = [...before, ...new Array<number>(8 - before.length - after.length).fill(0), ...after];
  const bytes = Buffer.alloc(16);
  words.forEach((word, i) => bytes.writeUInt16BE(word, i * 2));
  return bytes;
}
