/**
 * Measurement (not a test): the attention-mass recall of the block-sparse prefill selection on structured inputs.
 * (Prefill timing, dense vs block-sparse vs Lambda, is `sift bench attention --prefill-contexts ...`.)
 *
 *   node dist/tests/bench/block-sparse-prefill.js recall [L ...]
 *
 * prints, per scenario and prompt length L (default 4096; the last 512-token chunk of it), the recall of the flat
 * selection (every earlier block scored) and of the hierarchical one (groups of 8 blocks bounded first, margin 8).
 * `measureRecall` is also what tests/bench/block-sparse-recall.test.ts asserts floors on.
 */
import { HeadMode, PrefillAttention } from '../../model/attention/prefill.js';
import { blockDigestBytes } from '../../shaders/block_digest.js';
import { type BlockHierarchy, DEFAULT_BLOCK_HIERARCHY, FLAT_BLOCKS } from '../../shaders/block_select.js';
import { Gpu, UniformArena } from '../../shaders/runtime.js';
import { f32ToF16 } from '../../util/dtype.js';
import { Rng } from '../helpers/rng.js';

const CHUNK = 512;
const BS = 64;

/**
 * Recall: share of the dense softmax mass (per query token and head) that falls on the selected key blocks.
 * Scenarios (topic directions t ~ N(0, 1.5^2); keys and queries = N(0, 1) + their block's topic):
 *   topics8: every key block has one of 8 topics; each query block asks for one (about 1/8 of blocks match);
 *   planted3: each query block of the chunk has its own topic, carried by 3 random earlier key blocks only;
 *   random: no structure (no selection can beat chance by much).
 */
export type RecallScenario = 'topics8' | 'planted3' | 'random';

/** Mean attention-mass recall and share of keys kept of one scenario's last 512-token chunk of an L-token prompt. */
export async function measureRecall(
  gpu: Gpu,
  o: { L: number; scenario: RecallScenario; topBlocks: number; hierarchy: BlockHierarchy; seed?: number },
): Promise<{ recall: number; kept: number }> {
  const nHeads = 8;
  const nKv = 2;
  const hd = 64;
  const { L, scenario } = o;
  const start = L - CHUNK; // the last chunk
  const pageSize = 64;
  const pages = L / pageSize;
  const top = o.topBlocks;
  {
    const structured = scenario !== 'random';
    const rng = new Rng(o.seed ?? 11);
    const nTopics = scenario === 'topics8' ? 8 : CHUNK / BS;
    const topics = Array.from({ length: nTopics }, () => rng.normalArray(hd, 1.5));
    // topics8: every block has one of 8 topics, each query block asks for one (~1/8 of blocks match).
    // planted3: query block i of the chunk asks for its own topic i, carried by 3 random earlier key blocks only.
    const blockTopic = Array.from({ length: pages * 2 }, () => (scenario === 'topics8' ? rng.int(0, 7) : -1));
    if (scenario === 'planted3') {
      for (let i = 0; i < nTopics; i++) {
        blockTopic[pages + start / BS + i] = i;
        for (let n = 0; n < 3; ) {
          const c = rng.int(1, start / BS - 1);
          if (blockTopic[c] === -1) {
            blockTopic[c] = i;
            n++;
          }
        }
      }
    }
    const kF = new Float32Array(L * nKv * hd);
    const vF = new Float32Array(L * nKv * hd);
    const kWords = new Uint32Array((L * nKv * hd) / 2);
    for (let j = 0; j < L; j++) {
      for (let h = 0; h < nKv; h++) {
        const o = (j * nKv + h) * hd;
        for (let d = 0; d < hd; d++) {
          const z = blockTopic[Math.floor(j / BS)];
          const x = rng.normal() + (structured && z >= 0 ? topics[z][d] : 0);
          kF[o + d] = x;
          vF[o + d] = rng.normal();
        }
        for (let d = 0; d < hd; d += 2) kWords[(o + d) / 2] = f32ToF16(kF[o + d]) | (f32ToF16(kF[o + d + 1]) << 16);
      }
    }
    const q = new Float32Array(CHUNK * nHeads * hd);
    for (let t = 0; t < CHUNK; t++) {
      const want = blockTopic[pages + Math.floor((start + t) / BS)]; // each query block's own topic
      for (let h = 0; h < nHeads; h++) {
        for (let d = 0; d < hd; d++) q[(t * nHeads + h) * hd + d] = rng.normal() + (structured ? topics[want][d] : 0);
      }
    }
    const positions = Uint32Array.from({ length: CHUNK }, (_, i) => start + i);
    const prefill = new PrefillAttention(gpu, { topBlocks: top, hierarchy: o.hierarchy });
    const plan = prefill.plan(new Uint32Array(CHUNK), positions, nHeads / nKv);
    const blockList = gpu.createBuffer('bl', prefill.blockListBytes(plan, nKv));
    const arena = new UniformArena(gpu);
    const shape = { numKvHeads: nKv, headDim: hd, pageSize, maxPagesPerSeq: pages };
    const kCache = gpu.upload('k', kWords);
    const blockTable = gpu.upload(
      'bt',
      Uint32Array.from({ length: pages }, (_, i) => i),
    );
    const digests = gpu.createBuffer('digests', blockDigestBytes(pages, pageSize, BS, nKv, hd));
    const entries = prefill.digestEntries([{ row: 0, start: 0, end: L }]);
    gpu.run((pass) => {
      prefill.encodeDigests(pass, arena, {
        kCache,
        blockTable,
        entries: gpu.upload('entries', entries),
        digests,
        numEntries: entries.length / 3,
        ...shape,
      });
      prefill.encodeLayer(pass, arena, {
        q: gpu.upload('q', q),
        kCache,
        vCache: kCache,
        blockTable,
        qBlocks: gpu.upload('qb', plan.blocks.qBlocks),
        tiles: gpu.upload('tiles', plan.tiles.tiles),
        digests,
        blockList,
        out: gpu.createBuffer('out', q.byteLength),
        plan,
        numHeads: nHeads,
        ...shape,
        scale: 1 / Math.sqrt(hd),
        headModes: Array(nKv).fill(HeadMode.sparse),
      });
    }, arena);
    const lists = await gpu.readU32(blockList);
    const stride = prefill.listStride(plan);
    let recallSum = 0;
    let keptSum = 0;
    let n = 0;
    for (let t = 0; t < CHUNK; t++) {
      const pos = start + t;
      const qb = Math.floor(t / BS);
      for (let h = 0; h < nHeads; h++) {
        const kvh = Math.floor(h / (nHeads / nKv));
        const base = (qb * nKv + kvh) * stride;
        const kept = new Set(lists.subarray(base + 1, base + 1 + lists[base]));
        const scores = new Float64Array(pos + 1);
        let max = Number.NEGATIVE_INFINITY;
        for (let j = 0; j <= pos; j++) {
          let s = 0;
          const ko = (j * nKv + kvh) * hd;
          for (let d = 0; d < hd; d++) s += q[(t * nHeads + h) * hd + d] * kF[ko + d];
          scores[j] = s / Math.sqrt(hd);
          max = Math.max(max, scores[j]);
        }
        let total = 0;
        let hit = 0;
        for (let j = 0; j <= pos; j++) {
          const e = Math.exp(scores[j] - max);
          total += e;
          if (kept.has(Math.floor(j / BS))) hit += e;
        }
        recallSum += hit / total;
        keptSum += (kept.size * BS) / (pos + 1);
        n++;
      }
    }
    arena.destroy();
    prefill.destroy();
    return { recall: recallSum / n, kept: keptSum / n };
  }
}

async function recall(lengths: number[]): Promise<void> {
  const gpu = await Gpu.create();
  // ~1/8 of a 4k prompt's last chunk's causal blocks: 6 best + sink + diagonal of ~60.
  const topBlocks = 6;
  for (const L of lengths) {
    for (const scenario of ['topics8', 'planted3', 'random'] as const) {
      for (const [name, hierarchy] of [
        ['flat', FLAT_BLOCKS],
        ['hierarchical', DEFAULT_BLOCK_HIERARCHY],
      ] as const) {
        const r = await measureRecall(gpu, { L, scenario, topBlocks, hierarchy });
        console.log(
          `recall ${scenario}: L=${L}, last 512-token chunk, 8/2/64, topBlocks=${topBlocks}, ${name} ` +
            `(groups ${hierarchy.groupBlocks}, margin ${hierarchy.margin}): mean attention-mass recall ` +
            `${r.recall.toFixed(4)}, mean share of keys kept ${r.kept.toFixed(4)}`,
        );
      }
    }
  }
  gpu.destroy();
}

const [cmd, ...rest] = process.argv.slice(2);
if (cmd === 'recall') {
  await recall(rest.length ? rest.map(Number) : [4096]);
} else if (process.argv[1]?.endsWith('block-sparse-prefill.js')) {
  console.error('usage: block-sparse-prefill.js recall');
  process.exit(2);
}
