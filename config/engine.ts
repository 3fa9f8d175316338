/** Engine configuration: batching, KV cache sizing, GPU choice. */
import { resolveSection, type SectionLayers, type SectionSpec, type SectionValues } from './schema.js';

export const ENGINE_SPEC = {
  maxBatchTokens: {
    kind: 'optional-int',
    default: null,
    min: 1,
    max: 65536,
    defaultText: 'auto',
    doc:
      'most new tokens in one forward pass (the prefill chunk); auto: the most, in multiples of 64 up to 2048, ' +
      'whose activations fit --activation-mib and whose largest activation buffer fits one storage binding (the ' +
      'startup log says what it chose); a number overrides',
  },
  activationMib: {
    kind: 'int',
    default: 256,
    min: 1,
    max: 1 << 20,
    doc: "GPU memory in MiB for one step's activations (the prefill chunk's scratch), which sizes the auto chunk",
  },
  pageSize: { kind: 'int', default: 64, min: 1, max: 4096, doc: 'tokens per physical KV page' },
  kvCacheMib: {
    kind: 'int',
    default: 256,
    min: 1,
    max: 1 << 20,
    doc: 'GPU memory for the KV cache in MiB (pages = this / bytes per page)',
  },
  maxSeqs: { kind: 'int', default: 64, min: 1, max: 4096, doc: 'most sequences running at once' },
  maxContext: {
    kind: 'optional-int',
    default: null,
    min: 1,
    max: 1 << 24,
    defaultText: "the model's max_position_embeddings",
    doc: "context limit in tokens (prompt + completion); above the model's trained length it is allowed with a warning",
  },
  adapter: {
    kind: 'string',
    default: '',
    defaultText: 'the adapter Dawn picks',
    doc: 'WebGPU adapter to use, by (part of) its name (`sift gpu` shows the one in use)',
  },
  quantize: {
    kind: 'string',
    default: 'none',
    choices: ['none', 'int8', 'q4'],
    doc:
      'quantize F32/F16/BF16 weights at load, round to nearest (calibrated q4 with --quantize-imatrix or --quantize-gptq): int8 per output channel, or q4 ' +
      '(4 bits, a scale and min per group of --quantize-group columns); kept quantized on the GPU. GGUF files ' +
      'keep their own quantization',
  },
  quantizeGroup: {
    kind: 'int',
    default: 64,
    min: 8,
    max: 65536,
    doc: 'columns per q4 scale group (a multiple of 8)',
  },
  quantizeInt8: {
    kind: 'string',
    default: 'attn-v,ffn-down',
    doc:
      'with --quantize q4: matrices kept at int8, a comma list of embedding (token embedding and lm_head), attn-v ' +
      "(every layer's v_proj), ffn-down (every layer's down_proj), or none; as llama.cpp's Q4_K_M keeps v and down " +
      'wider (on stories15M the default mix agrees with F32 on 92% of greedy tokens, plain q4 on 88-90%)',
  },
  quantizeImatrix: {
    kind: 'string',
    default: '',
    defaultText: 'none: round to nearest',
    doc:
      "with --quantize q4: an importance matrix written by `sift imatrix` (mean x^2 of every linear layer's input " +
      "channels over a calibration text); each q4 group's scale and min then minimize the importance-weighted " +
      "error, as llama.cpp's imatrix (calibrated 4-bit). The file must come from the same model",
  },
  quantizeGptq: {
    kind: 'string',
    default: '',
    defaultText: 'none',
    doc:
      "with --quantize q4: GPTQ statistics written by `sift imatrix --full` (mean x x^T of every linear layer's " +
      'input over a calibration text); each q4 matrix is then quantized by GPTQ (Frantar et al. 2022): columns in ' +
      'order, each rounding error spread over the columns not yet quantized through the Cholesky factor of H^-1, ' +
      'group scales and mins fitted as groups start, weighted by diag(H). Replaces --quantize-imatrix. The file ' +
      'must come from the same model',
  },
  quantizeGptqActOrder: {
    kind: 'bool',
    default: false,
    doc: 'with --quantize-gptq: quantize columns by descending diag(H) (GPTQ act-order), group scales fixed first',
  },
  quantizeChannelScales: {
    kind: 'bool',
    default: false,
    doc:
      'with --quantize-imatrix: also search per-input-channel scales (as AWQ) and fold them exactly into the op ' +
      'before each matrix (the norm before q/k/v and gate/up, v_proj before o_proj, up_proj before down_proj); ' +
      'off by default: on stories15M they did not beat the importance-weighted scales and mins alone',
  },
  errorScopeInterval: {
    kind: 'int',
    default: 16,
    min: 0,
    max: 1 << 20,
    doc: 'engine steps between WebGPU error-scope checks (validation, out of memory; 1 = every step, 0 = off); uncaptured errors are checked every step',
  },
} as const satisfies SectionSpec;

export type EngineConfig = SectionValues<typeof ENGINE_SPEC>;

export function engineConfig(layers: SectionLayers = {}): EngineConfig {
  return resolveSection('ENGINE', ENGINE_SPEC, layers);
}
