/** Seeded random numbers for tests: the same generator the synthetic checkpoints use. */
export { Rng } from '../../util/rng.js';
