export { forward, engines, chooseEngine, defaultSpliceEngine } from './forward.js';
export { SpliceEngine, type SpliceEngineOptions, type SpliceEngineStats } from './splice-engine.js';
export { forwardJs, type JsForwardOptions } from './js-engine.js';
export {
  ForwardError,
  type EngineName,
  type EngineChoice,
  type EndReason,
  type ForwardOptions,
  type ForwardResult,
  type EnginesReport,
  type EngineAvailability,
  type Side,
} from './types.js';
