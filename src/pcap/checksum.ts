// The Internet checksum (RFC 1071), used by the pcap writer for IPv4 header and TCP checksums.
//
// The sum is kept separate from the final complement so that a payload can be summed on its
// own (by JS, or later by native code that splices the payload straight into the file) and
// combined with the headers afterwards: one's complement addition is commutative and
// associative, so the order of the pieces does not matter as long as each piece starts on an
// even offset of the checksummed data.

/**
 * One's complement sum of `data` as big-endian 16-bit words, folded to 16 bits (0..0xffff),
 * not complemented. An odd trailing byte is padded with a zero byte, so when chaining pieces
 * through `initial`, every piece but the last must have an even length.
 * `initial` is a previous result (or any sum of them) to add to.
 */
export function onesSum(data: Uint8Array, initial = 0): number {
  let sum = initial;
  const even = data.length & ~1;
  for (let i = 0; i < even; i += 2) sum += (data[i] << 8) | data[i + 1];
  if (even < data.length) sum += data[even] << 8;
  return fold(sum);
}

/** Folds carries back into the low 16 bits (end-around carry). Accepts any non-negative safe integer. */
export function fold(sum: number): number {
  while (sum > 0xffff) sum = (sum % 0x10000) + Math.floor(sum / 0x10000);
  return sum;
}

/** The checksum field value for `data` (which has its checksum field zeroed). */
export function internetChecksum(data: Uint8Array, initial = 0): number {
  return ~onesSum(data, initial) & 0xffff;
}
