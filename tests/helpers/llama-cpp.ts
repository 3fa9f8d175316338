/**
 * llama.cpp itself, for checking sift against it: the prebuilt libllama / libggml of the npm package
 * `@node-llama-cpp/linux-x64` (llama.cpp release v0.5.0, CPU backends), called through the FFI package `koffi`.
 * Both are devDependencies resolved the ordinary way (node_modules; NODE_PATH also works, as for any require).
 *
 *   quantize   llama_model_quantize, the function llama.cpp's `llama-quantize` tool is a command line around
 *              (same defaults: no importance matrix, output tensor quantized, llama.cpp's per-tensor type choices
 *              and fallbacks for rows that are not a whole number of blocks)
 *   dequantize ggml's own dequantize_row_<type> (ggml-base), to compare sift's repacking with
 *   greedy     llama.cpp's own forward pass (CPU): greedy tokens of a GGUF from a prompt of token ids
 *
 * Structs are laid out as include/llama.h of that release declares them: llama_model_quantize_params field by field
 * (64 bytes); llama_model_params (80 bytes) and llama_context_params (160) as opaque 8-aligned bytes taken from the
 * library's own defaults (one thread set at its offset), which the SysV x86-64 ABI passes in memory.
 */
import { createRequire } from 'node:module';
import path from 'node:path';

/** llama_ftype values (include/llama.h) of the files the tests make. */
export const LLAMA_FTYPE = { F32: 0, F16: 1, Q4_0: 2, Q8_0: 7, Q4_K_M: 15, Q6_K: 18 } as const;
export type LlamaFtype = keyof typeof LLAMA_FTYPE;

/** The package that ships the prebuilt libraries, and its version (devDependencies pin it). */
export const LLAMA_CPP_PACKAGE = '@node-llama-cpp/linux-x64';

// The part of koffi's API used here (its own typings are not needed at build time).
type KoffiFunction = (...args: unknown[]) => unknown;
interface KoffiLib {
  func(decl: string): KoffiFunction;
}
interface Koffi {
  load(path: string): KoffiLib;
  struct(name: string, def: Record<string, unknown>): unknown;
  array(type: string, n: number, hint?: string): unknown;
  alloc(type: string, n: number): unknown;
  free(p: unknown): void;
  encode(ref: unknown, type: string, value: unknown, len?: number): void;
  decode(ref: unknown, type: string, len?: number): unknown;
  sizeof(type: unknown): number;
  proto(decl: string): unknown;
  pointer(type: unknown): unknown;
  register(fn: (...args: never[]) => void, type: unknown): unknown;
}

export interface LlamaCpp {
  /** llama_version(): the release string the library reports. */
  version: string;
  /** Directory of the shared libraries. */
  libDir: string;
  /** llama.cpp's log lines so far (kept here, not printed: a model load logs hundreds). */
  log: string[];
  /** llama_model_quantize(inp -> out, ftype); throws with llama.cpp's return code when it fails. */
  quantize(inp: string, out: string, ftype: LlamaFtype, nthread?: number): void;
  /** ggml's dequantize_row_<type>: `n` values of `type` ('Q8_0', 'Q4_K', ...) from `bytes`. */
  dequantize(type: string, bytes: Uint8Array, n: number): Float32Array;
  /** llama.cpp's greedy tokens: `steps` argmax tokens after `prompt`, on the CPU backend. */
  greedy(gguf: string, prompt: readonly number[], steps: number): number[];
}

let loaded: LlamaCpp | undefined;

/**
 * Loads llama.cpp from the packages; throws naming what is missing (a machine other than linux-x64 has no
 * prebuilt `@node-llama-cpp/linux-x64`: callers decide what to do there).
 */
export function loadLlamaCpp(): LlamaCpp {
  if (loaded) return loaded;
  const require = createRequire(import.meta.url);
  let koffi: Koffi;
  let entry: string;
  try {
    koffi = require('koffi') as Koffi;
    entry = require.resolve(LLAMA_CPP_PACKAGE);
  } catch (e) {
    throw new Error(
      `llama.cpp check needs the devDependencies koffi and ${LLAMA_CPP_PACKAGE} (npm install): ${(e as Error).message}`,
    );
  }
  // <pkg>/dist/index.js -> <pkg>/bins/linux-x64/
  const libDir = path.join(path.dirname(entry), '..', 'bins', 'linux-x64');
  const llama = koffi.load(path.join(libDir, 'libllama.v0.5.0.so'));
  const ggmlBase = koffi.load(path.join(libDir, 'libggml-base.so'));
  const ggml = koffi.load(path.join(libDir, 'libggml.v0.5.0.so'));

  koffi.struct('llama_model_quantize_params', {
    nthread: 'int32',
    ftype: 'int32',
    output_tensor_type: 'int32',
    token_embedding_type: 'int32',
    allow_requantize: 'bool',
    quantize_output_tensor: 'bool',
    only_copy: 'bool',
    pure: 'bool',
    keep_split: 'bool',
    dry_run: 'bool',
    imatrix: 'void *',
    kv_overrides: 'void *',
    tt_overrides: 'void *',
    prune_layers: 'void *',
    max_buf_size: 'size_t',
  });
  const qp = koffi.sizeof('llama_model_quantize_params');
  if (qp !== 64) throw new Error(`llama_model_quantize_params is ${qp} bytes here, 64 in llama.h v0.5.0`);
  koffi.struct('llama_model_params', { bytes: [8, koffi.array('uint8', 80, 'Typed')] });
  koffi.struct('llama_context_params', { bytes: [8, koffi.array('uint8', 160, 'Typed')] });
  koffi.struct('llama_batch', {
    n_tokens: 'int32',
    token: 'void *',
    embd: 'void *',
    pos: 'void *',
    n_seq_id: 'void *',
    seq_id: 'void *',
    logits: 'void *',
  });

  const version = llama.func('const char *llama_version()')() as string;
  const backendInit = llama.func('void llama_backend_init()');
  const loadBackends = ggml.func('void ggml_backend_load_all_from_path(const char *dir)');
  const defaults = llama.func('llama_model_quantize_params llama_model_quantize_default_params()');
  const quantizeFn = llama.func(
    'uint32 llama_model_quantize(const char *inp, const char *out, const llama_model_quantize_params *params)',
  );
  const modelDefaults = llama.func('llama_model_params llama_model_default_params()');
  const contextDefaults = llama.func('llama_context_params llama_context_default_params()');
  const loadModel = llama.func('void *llama_model_load_from_file(const char *path, llama_model_params params)');
  const freeModel = llama.func('void llama_model_free(void *model)');
  const initContext = llama.func('void *llama_init_from_model(void *model, llama_context_params params)');
  const freeContext = llama.func('void llama_free(void *ctx)');
  const vocabOf = llama.func('void *llama_model_get_vocab(void *model)');
  const nVocab = llama.func('int32 llama_vocab_n_tokens(void *vocab)');
  const batchGetOne = llama.func('llama_batch llama_batch_get_one(void *tokens, int32 n)');
  const decodeFn = llama.func('int32 llama_decode(void *ctx, llama_batch batch)');
  const logitsIth = llama.func('float *llama_get_logits_ith(void *ctx, int32 i)');
  const rows = new Map<string, KoffiFunction>();

  // llama.cpp's log goes to `log` (the callback runs on this thread: every call here is synchronous and the
  // contexts run one thread); warnings and errors are also printed.
  const log: string[] = [];
  const logProto = koffi.proto('void ggml_log_callback(int level, const char *text, void *user)');
  let last = 0;
  let lineStart = true;
  const onLog = koffi.register((level: number, text: string) => {
    log.push(text);
    if (level !== 5) last = level; // GGML_LOG_LEVEL_CONT: more of the previous message
    if (last === 3 || last === 4) process.stderr.write(lineStart ? `# llama.cpp: ${text}` : text); // WARN, ERROR
    lineStart = text.endsWith('\n');
  }, koffi.pointer(logProto));
  llama.func('void llama_log_set(ggml_log_callback *cb, void *user)')(onLog, null);
  backendInit();
  loadBackends(libDir);

  loaded = {
    version,
    libDir,
    log,
    quantize(inp, out, ftype, nthread = 2) {
      const p = defaults() as Record<string, unknown>;
      p.ftype = LLAMA_FTYPE[ftype];
      p.nthread = nthread;
      const rc = quantizeFn(inp, out, p) as number;
      if (rc !== 0) throw new Error(`llama_model_quantize(${inp} -> ${out}, ${ftype}) returned ${rc}`);
    },
    dequantize(type, bytes, n) {
      const name = `dequantize_row_${type.replace(/^Q/, 'q')}`;
      let f = rows.get(name);
      if (!f) {
        f = ggmlBase.func(`void ${name}(const uint8_t *x, _Out_ float *y, int64 k)`);
        rows.set(name, f);
      }
      const y = new Float32Array(n);
      f(bytes, y, n);
      return y;
    },
    greedy(gguf, prompt, steps) {
      const model = loadModel(gguf, modelDefaults());
      if (!model) throw new Error(`llama.cpp could not load ${gguf}`);
      // n_threads and n_threads_batch (int32 at bytes 28 and 32) = 1: ggml's worker threads spin while they wait, which
      // on a shared or small machine costs far more than this model's matmuls gain from them
      const cp = contextDefaults() as { bytes: Uint8Array };
      const view = new DataView(cp.bytes.buffer, cp.bytes.byteOffset, cp.bytes.byteLength);
      view.setInt32(28, 1, true);
      view.setInt32(32, 1, true);
      const ctx = initContext(model, cp);
      const buf = koffi.alloc('int32', Math.max(prompt.length, 1));
      try {
        if (!ctx) throw new Error(`llama.cpp could not make a context for ${gguf}`);
        const n = nVocab(vocabOf(model)) as number;
        const out: number[] = [];
        let feed = [...prompt];
        for (let s = 0; s < steps; s++) {
          koffi.encode(buf, 'int32', feed, feed.length);
          const rc = decodeFn(ctx, batchGetOne(buf, feed.length)) as number;
          if (rc !== 0) throw new Error(`llama_decode returned ${rc} at step ${s}`);
          const logits = koffi.decode(logitsIth(ctx, -1), 'float', n) as number[];
          let best = 0;
          for (let i = 1; i < n; i++) if (logits[i] > logits[best]) best = i;
          out.push(best);
          feed = [best];
        }
        return out;
      } finally {
        koffi.free(buf);
        if (ctx) freeContext(ctx);
        freeModel(model);
      }
    },
  };
  return loaded;
}
