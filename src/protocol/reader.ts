// A bounds-checked cursor over a Buffer, after ssh2's lib/protocol/utils.js readers: every read
// returns undefined when the bytes have not arrived yet, so parsers can say "incomplete" instead of
// throwing a RangeError or reading past the end of a partial message.

/** Result shared by every incremental parser: the bytes seen so far are a prefix of a valid message. */
export interface Incomplete {
  status: 'incomplete';
}

/**
 * The bytes seen so far cannot start a valid message. `code` is stable (match on it, never on
 * `message`); `reply` is the protocol's reply/status code to send before closing. Messages never
 * include secrets from the input.
 */
export interface ProtocolError<C extends string = string> {
  status: 'error';
  code: C;
  reply: number;
  message: string;
}

export const INCOMPLETE: Incomplete = Object.freeze({ status: 'incomplete' }) as Incomplete;

export function protocolError<C extends string>(code: C, reply: number, message: string): ProtocolError<C> {
  return { status: 'error', code, reply, message };
}

export class Reader {
  constructor(
    readonly buf: Buffer,
    public pos = 0,
  ) {}

  get remaining(): number {
    return this.buf.length - this.pos;
  }

  u8(): number | undefined {
    if (this.pos + 1 > this.buf.length) return undefined;
    return this.buf[this.pos++];
  }

  u16(): number | undefined {
    if (this.pos + 2 > this.buf.length) return undefined;
    const value = this.buf.readUInt16BE(this.pos);
    this.pos += 2;
    return value;
  }

  /** A view (not a copy) of the next n bytes. */
  bytes(n: number): Buffer | undefined {
    if (n < 0 || this.pos + n > this.buf.length) return undefined;
    const view = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return view;
  }

  /**
   * A NUL-terminated field of at most `max` bytes (the NUL not counted), NUL consumed.
   * 'overflow' as soon as max + 1 bytes have arrived without a NUL: the wire format has no length,
   * so without a cap a client could make us buffer forever.
   */
  cstring(max: number): Buffer | 'incomplete' | 'overflow' {
    const limit = Math.min(this.buf.length, this.pos + max + 1);
    const nul = this.buf.subarray(this.pos, limit).indexOf(0);
    if (nul >= 0) {
      const view = this.buf.subarray(this.pos, this.pos + nul);
      this.pos += nul + 1;
      return view;
    }
    return this.buf.length >= this.pos + max + 1 ? 'overflow' : 'incomplete';
  }
}
