export { forward, engines, chooseEngine, defaultSpliceEngine, type ForwardOptions } from './engine/forward.js';
export { SpliceEngine, type SpliceEngineOptions, type SpliceEngineStats, type SpliceRecordSink } from './engine/splice/engine.js';
export { forwardJs, type JsForwardOptions } from './engine/js-engine.js';
export {
  ForwardError,
  type EngineName,
  type EngineChoice,
  type EndReason,
  type ForwardResult,
  type EnginesReport,
  type EngineAvailability,
  type SpliceAvailability,
  type Side,
} from './engine/contract.js';
export { createProxyServer, ProxyServer, openProxyRisk, ExposureError } from './proxy/server.js';
export type { ProxyOptions, ProxyConnectionRecord, ProxyTimeouts, ProxyLimits, ProxyProtocol } from './proxy/options.js';
export { Credentials, CredentialsError } from './proxy/auth.js';
export { parseRule, evaluateRules, RuleError, type Rule, type RuleSubject, type ProxyCommand } from './proxy/rules.js';
export { Forwarder, type ForwarderOptions, type ConnectionRecord } from './forwarder/server.js';
export { createRelay, Relay, type RelayOptions, type RelayConfig } from './relay/create.js';
export { RelayRegistry, type RelayRegistryOptions } from './relay/registry.js';
export type { RelayView } from './relay/view.js';
export type { RelayInput, RelayChangeInput, ToxicChangeInput } from './relay/control-input.js';
export { startRelayApi, type RelayApi, type RelayApiOptions } from './relay/api.js';
export { RelayError, PopulateError, RELAY_ERROR_STATUS, type RelayErrorCode } from './relay/control-errors.js';
export type { RelayConnectionRecord } from './relay/relay.js';
export { parseToxic, ToxicError, type Toxic, type ToxicInput, type ToxicType, type Direction } from './relay/toxics.js';
export type { RecordOptions, RecordLegs } from './relay/recording.js';
export * from './tunnel/index.js';
export { openNativePcap, NativePcapSink, type NativePcapOptions } from './engine/splice/pcap-sink.js';
export type { SpliceControl, SpliceForwardOptions, SpliceRecordOptions } from './engine/splice/engine.js';
export type { ReleasedPair } from './engine/contract.js';
export { TcpConversation, PCAP_GLOBAL_HEADER, type ConversationState, type Endpoint as PcapEndpoint } from './pcap/tcp-conversation.js';
export * from './mux/index.js';
