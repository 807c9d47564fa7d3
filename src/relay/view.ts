// A relay as the control layer shows it: Toxiproxy's JSON shape of a proxy.
import type { Toxic } from './toxics.js';

/** A proxy in Toxiproxy's JSON shape. `listen` is as given until it has listened, then the bound address. */
export interface RelayView {
  name: string;
  listen: string;
  upstream: string;
  enabled: boolean;
  toxics: Toxic[];
}
