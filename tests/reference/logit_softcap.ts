/** Reference final logit soft-capping: cap * tanh(x / cap) per element, in f64. */
import { softcapRef } from './attention.js';

export function logitSoftcapRef(x: Float32Array, cap: number): Float32Array {
  return x.map((v) => softcapRef(v, cap));
}
