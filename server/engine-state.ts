/**
 * The engine as the routes reach it. The server listens before the model is loaded, so the engine and the text
 * side arrive later (`ready`); until then generation routes and /health answer 503 NOT_READY. A GPU fault (the
 * engine's deviceFault(), or a DEVICE_LOST / DEVICE_FAULT a request saw) marks the engine down for good: /health
 * and every route then answer 503 with its code.
 */
import { isSiftError, SiftError } from '../config/errors.js';
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

  /** The model's text side, or null while it loads. */
  get text(): TextSide | null {
    return this.textRef;
  }

  get modelName(): string | null {
    return this.servedName || this.engineRef?.modelName || null;
  }

  get lost(): boolean {
    return this.fault() !== null;
  }

  /** The GPU fault that took the engine down (seen by a request, or reported by the engine), or null. */
  private fault(): Error | null {
    return this.lostError ?? this.engineRef?.deviceFault() ?? null;
  }

  markLost(err: Error): void {
    this.lostError ??= err;
  }

  /** The engine and text side, or the 503 a request gets instead. */
  require(): { engine: EngineClient; text: TextSide; modelName: string } {
    const fault = this.fault();
    if (fault) {
      const code = isSiftError(fault, 'DEVICE_FAULT') ? 'DEVICE_FAULT' : 'DEVICE_LOST';
      throw new SiftError(code, fault.message, { cause: fault });
    }
    if (!this.engineRef || !this.textRef) throw new SiftError('NOT_READY', 'the model is still loading');
    return { engine: this.engineRef, text: this.textRef, modelName: this.modelName ?? this.engineRef.modelName };
  }
}
