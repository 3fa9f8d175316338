/**
 * Selection reuse (Quest / LServe): a decode step either reselects its pages (page_select) or reuses the
 * selection of an earlier step. A sequence reselects on its first decode step after any prefill (the digests and
 * the context changed), then every `interval` decode steps (default 4): steps 0, R, 2R, ... after a prefill.
 * Plain bookkeeping keyed by any sequence id; no GPU, no KV cache.
 */
import { SiftError } from '../../config/errors.js';

export const DEFAULT_RESELECT_INTERVAL = 4;

export class SelectionSchedule<Id = string | number> {
  /** Decode steps since the last reselection, per sequence; absent = must reselect. */
  private readonly since = new Map<Id, number>();
  private reselects = 0;
  private reuses = 0;

  constructor(readonly interval = DEFAULT_RESELECT_INTERVAL) {
    if (!Number.isInteger(interval) || interval < 1) {
      throw new SiftError('INTERNAL', `SelectionSchedule: interval ${interval} must be an integer >= 1`);
    }
  }

  /** A prefill (or prefill chunk) of `id` ran: its next decode step reselects. */
  onPrefill(id: Id): void {
    this.since.delete(id);
  }

  /** Decides one decode step of `id`: true = reselect now, false = reuse the kept selection. Advances the count. */
  step(id: Id): boolean {
    const n = this.since.get(id);
    const reselect = n === undefined || n >= this.interval;
    this.since.set(id, reselect ? 1 : (n as number) + 1);
    if (reselect) this.reselects++;
    else this.reuses++;
    return reselect;
  }

  /** The sequence finished or was preempted. */
  forget(id: Id): void {
    this.since.delete(id);
  }

  /** Decode steps that reselected / reused so far (the "selection reuse" metric). */
  stats(): { reselects: number; reuses: number } {
    return { reselects: this.reselects, reuses: this.reuses };
  }
}
