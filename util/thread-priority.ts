/**
 * Background priority for worker threads. The workers that parse big bodies and tokenize big prompts do bulk work
 * for one request at a time; the main thread answers /health and writes every running stream. When cores are
 * short (a busy host, or a burst of 7 MB bodies), the main thread should run first: on a 2-core machine with 4
 * clients sending 7 MB prompts, the parse worker at nice 10 took /health p99 from 211-269 ms to 91-152 ms at the same
 * big-request throughput (bench/results/RELIABILITY.md). Linux keeps a nice value per thread, set through the
 * thread's id; elsewhere (or when refused) this does nothing.
 */
import { readlinkSync } from 'node:fs';
import { setPriority } from 'node:os';

/** The nice value of background worker threads (0 = normal, 19 = lowest). */
export const BACKGROUND_NICE = 10;

/** Lowers the calling thread's scheduling priority to `nice`; true when it was set. */
export function lowerThreadPriority(nice = BACKGROUND_NICE): boolean {
  let tid: number;
  try {
    tid = Number(readlinkSync('/proc/thread-self').split('/').pop()); // "<pid>/task/<tid>"
  } catch {
    return false; // not Linux: no per-thread nice to set
  }
  if (!Number.isInteger(tid) || tid <= 0) return false;
  try {
    setPriority(tid, nice);
    return true;
  } catch {
    return false;
  }
}
