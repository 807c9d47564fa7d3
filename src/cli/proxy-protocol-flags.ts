// --accept-proxy-protocol and --send-proxy-protocol, shared by proxy, forward and relay.
import { InvalidArgumentError, Option } from 'commander';
import { parseProxyProtocolVersion, type ProxyProtocolVersion } from '../net/proxy-header.js';

/** `within`: the timeout a header must come within; `note`: what else a command says of it. */
export const acceptProxyProtocolOption = (within: string, note = '') =>
  new Option(
    '--accept-proxy-protocol',
    'every connection must start with a PROXY protocol header (v1 or v2, as HAProxy send-proxy[-v2] writes); its source address ' +
      `is the client in logs, rules and limits; a connection without a valid one within ${within} is closed${note}`,
  ).default(false);

export const sendProxyProtocolOption = (note = '') =>
  new Option('--send-proxy-protocol <version>', `write a PROXY protocol header (v1 or v2) to each upstream before any client byte, naming the real client${note}`)
    .argParser((value: string): ProxyProtocolVersion => {
      try {
        return parseProxyProtocolVersion(value);
      } catch {
        throw new InvalidArgumentError('--send-proxy-protocol must be v1 or v2.');
      }
    });
