// One direction of one relayed connection on the user-space path: the chain of toxic stages its
// bytes go through, which can change while bytes flow.
//
//   input → [stage for toxic 1] → [stage for toxic 2] → … → output
//
// Toxiproxy's rules for a live chain: a new toxic goes at the end; a removed one lets what it
// holds go on at once (TimedStage.bypass) and is then cut out; an updated one is replaced where
// it stands. No byte is lost or reordered by a change.
//
// The stages are wired with pipe({ end: false }) and the end of stream is passed on by hand, so
// that cutting a stage out can wait for its output to drain without ending the stage after it.
import { PassThrough, type Readable, type Transform, type Writable } from 'node:stream';
import type { Through } from '../engine/js-engine.js';
import { TimedStage } from './timed-stage.js';
import type { Toxic } from './toxics.js';

/** A stage for a toxic on this lane, or null when the toxic is for the other direction. */
export type MakeStage = (toxic: Toxic) => Transform;

interface Node {
  stream: Readable & Writable;
  toxic?: Toxic;
}

/** from → to, with the end passed on by onEnd (normally to.end()). */
class Wire {
  #onEnd: () => void;
  readonly #handler = () => this.#onEnd();
  constructor(readonly from: Readable, readonly to: Writable, onEnd?: () => void) {
    this.#onEnd = onEnd ?? (() => to.end());
    from.on('end', this.#handler);
    from.pipe(to, { end: false });
    // The end already went by: it will not be emitted again.
    if (from.readableEnded) queueMicrotask(this.#handler);
  }
  set onEnd(fn: () => void) {
    this.#onEnd = fn;
  }
  cut(): void {
    this.from.off('end', this.#handler);
    this.from.unpipe(this.to);
  }
}

const sameToxic = (a: Toxic, b: Toxic) => JSON.stringify(a) === JSON.stringify(b);

/** The Through of one direction of a relayed pair (forwardThrough). */
export class Lane implements Through {
  /** Write the source's bytes here; end() it at the source's EOF. */
  readonly input: PassThrough = new PassThrough();
  /** Read what goes to the destination from here. */
  readonly output: PassThrough = new PassThrough();
  readonly #nodes: Node[];
  readonly #wires: Wire[] = [];
  readonly #makeStage: MakeStage;
  #target: readonly Toxic[] | undefined;
  #cutting = false;
  #destroyed = false;

  constructor(toxics: readonly Toxic[], makeStage: MakeStage) {
    this.#makeStage = makeStage;
    this.#nodes = [{ stream: this.input }, ...toxics.map((toxic) => this.#node(toxic)), { stream: this.output }];
    for (let i = 0; i + 1 < this.#nodes.length; i++) this.#wires.push(new Wire(this.#nodes[i]!.stream, this.#nodes[i + 1]!.stream));
  }

  /**
   * True while the lane has no stage and holds nothing: a byte written now would come straight
   * out, so the caller may hand it to the destination itself and skip two stream hops.
   */
  get empty(): boolean {
    const { input, output } = this;
    return (
      this.#nodes.length === 2 &&
      !this.#cutting &&
      !this.#destroyed &&
      input.writableLength === 0 &&
      input.readableLength === 0 &&
      output.writableLength === 0 &&
      output.readableLength === 0
    );
  }

  /** A slicer's pieces must reach the socket as separate writes, not coalesced into one. */
  get keepsWritesApart(): boolean {
    for (const node of this.#nodes) if (node.toxic?.type === 'slicer') return true;
    return false;
  }

  get toxics(): Toxic[] {
    return this.#nodes.flatMap((node) => (node.toxic ? [node.toxic] : []));
  }

  /**
   * Brings the chain to `toxics` (this lane's direction only), keeping the stages that did not
   * change. Cutting a stage out waits for what it holds to drain; changes asked for meanwhile are
   * applied after it, one at a time, so two cuts never rewire the same stage at once.
   */
  update(toxics: readonly Toxic[]): void {
    this.#target = toxics;
    if (!this.#cutting) this.#apply();
  }

  #apply(): void {
    const toxics = this.#target;
    if (!toxics || this.#destroyed) return;
    const wanted = new Map(toxics.map((toxic) => [toxic.name, toxic]));
    for (const node of [...this.#nodes]) {
      if (!node.toxic) continue;
      const next = wanted.get(node.toxic.name);
      if (next && sameToxic(next, node.toxic)) continue;
      if (next) this.#insertBefore(this.#nodes.indexOf(node) + 1, this.#node(next));
      if (this.#cut(node)) return; // #apply runs again once it is out
    }
    const present = new Set(this.toxics.map((toxic) => toxic.name));
    for (const toxic of toxics) if (!present.has(toxic.name)) this.#insertBefore(this.#nodes.length - 1, this.#node(toxic));
    this.#target = undefined;
  }

  /** Tears the chain down: every stage's timers are cleared, nothing more comes out. */
  destroy(): void {
    this.#destroyed = true;
    for (const wire of this.#wires) wire.cut();
    for (const node of this.#nodes) node.stream.destroy();
  }

  #node(toxic: Toxic): Node {
    return { stream: this.#makeStage(toxic), toxic };
  }

  /** Puts `node` in front of the node at `index` (never 0: the input stays first). */
  #insertBefore(index: number, node: Node): void {
    const before = this.#nodes[index - 1]!;
    const after = this.#nodes[index]!;
    const old = this.#wires[index - 1]!;
    old.cut();
    this.#nodes.splice(index, 0, node);
    this.#wires.splice(index - 1, 1, new Wire(before.stream, node.stream), new Wire(node.stream, after.stream));
  }

  /**
   * Takes a toxic's stage out of the chain. Returns true when that has to wait for the stage to
   * drain (#apply is then called again), false when it is done or the end is already going
   * through the stage (it then stays, passing bytes straight on, until the lane ends).
   */
  #cut(node: Node): boolean {
    const index = this.#nodes.indexOf(node);
    const stream = node.stream;
    node.toxic = undefined; // no longer listed, even while it drains
    if (stream instanceof TimedStage) stream.bypass();
    if (stream.writableEnded) return false;
    const inWire = this.#wires[index - 1]!;
    const outWire = this.#wires[index]!;
    const before = this.#nodes[index - 1]!.stream;
    const after = this.#nodes[index + 1]!.stream;
    inWire.cut();
    this.#cutting = true;
    outWire.onEnd = () => {
      outWire.cut();
      this.#cutting = false;
      if (this.#destroyed) return;
      const at = this.#nodes.indexOf(node);
      this.#nodes.splice(at, 1);
      this.#wires.splice(at - 1, 2, new Wire(before, after));
      stream.destroy();
      this.#apply();
    };
    stream.end();
    return true;
  }
}
