/**
 * The engine as the routes reach it. The server listens before the model is loaded, so the engine and the text
 * side arrive later (`ready`); until then generation routes and /health answer 503 NOT_READY. A lost GPU device
 * (seen as a submit error or an 'error' finish) marks the engine lost: /health then answers 503 DEVICE_LOST.
 */
import { SiftError } from '../config/errors.js';
import type { EngineClient } from '../engine/client.js';
import type { TextSide } from '../text/text.js';
import type { ServerSettings } from './protocol.js';

export class EngineState {
  private lostError: Error | null = null;

  constructor(
    private engineRef: EngineClient | null,
    private textRef: TextSide | null,
    /** Name clients must pass as `model` (default: the engine's modelName). */
    private servedName: string | null = null,
  ) {}

  /** How the model is served (GET /v1/models shows it), once ready. */
  settings: ServerSettings | null = null;

  /** Installs the loaded engine (and its text side, if not given at build time, and how it is served). */
  ready(engine: EngineClient, text?: TextSide, settings?: ServerSettings): void {
    this.engineRef = engine;
    if (text) this.textRef = text;
    if (settings) this.settings = settings;
  }

  get engine(): EngineClient | null {
    return this.engineRef;
  }

  get modelName(): string | null {
    return this.servedName || this.engineRef?.modelName || null;
  }

  get lost(): boolean {
    return this.lostError !== null;
  }

  markLost(err: Error): void {
    this.lostError ??= err;
  }

  /** The engine and text side, or the 503 a request gets instead. */
  require(): { engine: EngineClient; text: TextSide; modelName: string } {
    if (this.lostError) throw new SiftError('DEVICE_LOST', this.lostError.message, { cause: this.lostError });
    if (!this.engineRef || !this.textRef) throw new SiftError('NOT_READY', 'the model is still loading');
    return { engine: this.engineRef, text: this.textRef, modelName: this.modelName ?? this.engineRef.modelName };
  }
}
