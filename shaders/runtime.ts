/**
 * The WebGPU runtime: the ground floor every kernel wrapper stands on.
 * Creates the device through Dawn's Node bindings (npm `webgpu`), picks the adapter, requests the limits and
 * features the kernels use, and offers buffers, read-back, a pipeline cache, WGSL loading and a uniform arena.
 */
import { create, globals } from 'webgpu';
import { SiftError } from '../config/errors.js';
import { projectRoot } from '../config/paths.js';
import { type ParamFields, type ParamsSpec, type ParamValues, parseParamsStruct } from './lib/params.js';
import { type PoolBinding, Slabs, slabBinding } from './lib/slabs.js';
import { checkOverrides, type Defines, preprocessWgsl } from './lib/wgsl.js';

export { projectRoot };

Object.assign(globalThis, globals);

/**
 * How Dawn's Node binding learns that GPU work finished: while any async operation is pending (onSubmittedWorkDone,
 * mapAsync, ...) it processes its events from a native callback it re-arms through the global `setImmediate`, a busy
 * loop on the main thread. On a GPU that costs one idle core. On a CPU adapter (lavapipe) the same cores run the
 * kernels, so the loop takes cores from them: a prefill matmul awaited under the loop took 1.23-1.40 s, under a 1 ms
 * timer 0.75-0.80 s (bench/results/PREFILL.md, "Dawn's event loop"). `throttleDawnPolling(ms)` reroutes those native callbacks
 * through a timer of `ms` milliseconds (each completion is seen up to ~1 ms later); callbacks written in JavaScript
 * pass through unchanged. Installed once per process, for CPU adapters (Gpu.create); 0 restores the busy loop.
 */
export const dawnPolling = { ms: 0, installed: false, throttled: 0 };

export function throttleDawnPolling(ms: number): void {
  dawnPolling.ms = ms;
  if (dawnPolling.installed) return;
  dawnPolling.installed = true;
  const immediate = globalThis.setImmediate;
  const isNative = (f: unknown) =>
    typeof f === 'function' && Function.prototype.toString.call(f).endsWith('{ [native code] }');
  const wrapped = (fn: (...args: unknown[]) => void, ...args: unknown[]) => {
    if (dawnPolling.ms > 0 && isNative(fn)) {
      dawnPolling.throttled++;
      return setTimeout(fn, dawnPolling.ms, ...args) as unknown as NodeJS.Immediate;
    }
    return immediate(fn, ...args);
  };
  // keep setImmediate's own properties (util.promisify.custom among them)
  Object.defineProperties(wrapped, Object.getOwnPropertyDescriptors(immediate));
  globalThis.setImmediate = wrapped as unknown as typeof setImmediate;
}

export interface GpuOptions {
  /** Choose an adapter whose name contains this (case-insensitive); empty = Dawn's default. */
  adapter?: string;
  /** Dawn backend, e.g. "vulkan"; default Dawn's choice. Also env SIFT_GPU_BACKEND. */
  backend?: string;
  /** Prefer the packed-u32 16-bit path even where shader-f16 exists (tests use this to cover both). */
  disableF16?: boolean;
  /**
   * Milliseconds between Dawn's event polls while GPU work is pending (throttleDawnPolling); default 1 on CPU
   * adapters, 0 (Dawn's busy loop) on GPUs. Also env SIFT_GPU_POLL_MS.
   */
  pollMs?: number;
}

/** What the device can do, as the kernels need to know it. */
export interface GpuCaps {
  adapterName: string;
  description: string;
  vendor: string;
  shaderF16: boolean;
  subgroups: boolean;
  subgroupMinSize: number;
  subgroupMaxSize: number;
  timestampQuery: boolean;
  maxStorageBufferBindingSize: number;
  maxBufferSize: number;
  maxComputeWorkgroupStorageSize: number;
  maxComputeInvocationsPerWorkgroup: number;
  maxComputeWorkgroupsPerDimension: number;
  maxStorageBuffersPerShaderStage: number;
  minUniformBufferOffsetAlignment: number;
  minStorageBufferOffsetAlignment: number;
  /** True for CPU rasterisers (lavapipe/llvmpipe, SwiftShader): kernels pick one-thread-per-row variants there. */
  isCpu: boolean;
  /** WGSL language feature packed_4x8_integer_dot_product (unpack4xI8, unpack4xU8, dot4I8Packed). */
  packed4x8: boolean;
}

const STORAGE = 0x80; // GPUBufferUsage.STORAGE
const COPY_SRC = 0x04;
const COPY_DST = 0x08;
const MAP_READ = 0x01;
const UNIFORM = 0x40;
const INDIRECT = 0x100;

export const BufferUsage = { STORAGE, COPY_SRC, COPY_DST, MAP_READ, UNIFORM, INDIRECT } as const;

/**
 * What the host asked of the device, counted by the runtime itself (always on: a few integer increments). The
 * benchmarks (`sift bench step`) and the tests read the same counters: snapshot with `gpu.counters()` and subtract
 * (`countersDelta`).
 */
export interface GpuCounters {
  /** Compute dispatches encoded (direct and indirect, recorded steps replayed included). */
  dispatches: number;
  /** device.createBindGroup calls. */
  bindGroups: number;
  /** queue.writeBuffer calls and the bytes they wrote. */
  writeBufferCalls: number;
  writeBufferBytes: number;
  /** queue.submit calls. */
  submits: number;
  /** Bytes copied back to the host (mapAsync of staging buffers) and the number of such reads. */
  readbacks: number;
  readbackBytes: number;
  /** Compute pipelines created (cache misses of Gpu.pipeline). */
  pipelines: number;
}

export function zeroCounters(): GpuCounters {
  return {
    dispatches: 0,
    bindGroups: 0,
    writeBufferCalls: 0,
    writeBufferBytes: 0,
    submits: 0,
    readbacks: 0,
    readbackBytes: 0,
    pipelines: 0,
  };
}

/** b - a, field by field. */
export function countersDelta(a: GpuCounters, b: GpuCounters): GpuCounters {
  const out = zeroCounters();
  for (const k of Object.keys(out) as (keyof GpuCounters)[]) out[k] = b[k] - a[k];
  return out;
}

/**
 * Reads shaders/<name>.wgsl through the preprocessor (shaders/lib/wgsl.ts: includes, //#if, $NAME defines, `enable
 * f16;` when defines.F16). SIFT_DUMP_WGSL=1 prints every generated shader.
 */
export function loadWgsl(name: string, defines: Defines = {}): string {
  const code = preprocessWgsl(name, defines);
  if (process.env.SIFT_DUMP_WGSL) {
    process.stderr.write(`// ---- ${name} ${JSON.stringify(defines)}\n${code}\n`);
  }
  return code;
}

/** One uniform slot handed out by the arena. */
export interface UniformSlot {
  buffer: GPUBuffer;
  offset: number;
  size: number;
  /** The declaration the slot was packed by (arena.params); Gpu.dispatch checks it against the pipeline's. */
  params?: ParamsSpec;
}

interface ArenaChunk {
  buffer: GPUBuffer;
  data: Uint8Array;
  view: DataView; // over data
}

/**
 * Uniforms for many dispatches in one submission: each dispatch gets its own 256-byte aligned slot in a few
 * large buffers; `flush()` writes them all with one writeBuffer per chunk before submit; `reset()` starts over.
 */
export class UniformArena {
  private chunks: ArenaChunk[] = [];
  private chunk = 0;
  private used = 0;
  constructor(
    private readonly gpu: Gpu,
    private readonly chunkSize = 64 * 1024,
  ) {}

  /** A slot holding a kernel's uniforms packed by name from `values` (see shaders/lib/params.ts). */
  params<F extends ParamFields>(spec: ParamsSpec<F>, values: ParamValues<F>): UniformSlot {
    const { chunk, offset } = this.reserve(spec.bytes);
    spec.write(chunk.view, offset, values);
    return { buffer: chunk.buffer, offset, size: spec.bytes, params: spec as unknown as ParamsSpec };
  }

  /** A slot holding raw bytes. */
  alloc(values: ArrayBufferView): UniformSlot {
    const size = Math.max(16, Math.ceil(values.byteLength / 16) * 16);
    const { chunk, offset } = this.reserve(size);
    chunk.data.set(new Uint8Array(values.buffer, values.byteOffset, values.byteLength), offset);
    return { buffer: chunk.buffer, offset, size };
  }

  private reserve(size: number): { chunk: ArenaChunk; offset: number } {
    const align = this.gpu.caps.minUniformBufferOffsetAlignment;
    let off = Math.ceil(this.used / align) * align;
    if (off + size > this.chunkSize) {
      this.chunk++;
      off = 0;
    }
    while (this.chunks.length <= this.chunk) {
      const data = new Uint8Array(this.chunkSize);
      this.chunks.push({
        buffer: this.gpu.device.createBuffer({
          label: 'uniform-arena',
          size: this.chunkSize,
          usage: UNIFORM | COPY_DST,
        }),
        data,
        view: new DataView(data.buffer),
      });
    }
    this.used = off + size;
    return { chunk: this.chunks[this.chunk], offset: off };
  }

  flush(): void {
    for (let i = 0; i <= this.chunk && i < this.chunks.length; i++) {
      const len = i < this.chunk ? this.chunkSize : this.used;
      if (len > 0) this.gpu.writeRaw(this.chunks[i].buffer, 0, this.chunks[i].data, 0, len);
    }
  }

  reset(): void {
    this.chunk = 0;
    this.used = 0;
  }

  destroy(): void {
    for (const c of this.chunks) c.buffer.destroy();
    this.chunks = [];
  }
}

/** A binding for a kernel: a whole buffer or a range of one. */
export interface BufferRange {
  buffer: GPUBuffer;
  offset?: number;
  size?: number;
}
export type Binding = GPUBuffer | BufferRange | UniformSlot;
/** What a kernel binds at one binding number: a buffer, a range, a uniform slot or a pool split into slabs. */
export type KernelBinding = Binding | PoolBinding;

function toResource(b: Binding): GPUBufferBinding {
  if ('buffer' in b && !('mapState' in b)) return { buffer: b.buffer, offset: b.offset ?? 0, size: b.size };
  return { buffer: b as GPUBuffer };
}

/** A cached pipeline with its preprocessed source and the uniform declarations checked against it. */
interface PipelineEntry {
  pipeline: GPUComputePipeline;
  code: string;
  /** null: the shader declares no struct Params. */
  params: Set<ParamsSpec> | null;
}

/** One dispatch of a captured pass: replayed with the same pipeline, bind group and grid (or indirect arguments). */
interface CapturedDispatch {
  pipeline: GPUComputePipeline;
  bindGroup: GPUBindGroup;
  x: number;
  y: number;
  z: number;
  /** Indirect dispatch: the grid is read from this buffer at `offset` when the pass runs. */
  indirect: GPUBuffer | null;
  offset: number;
}

/**
 * A compute pass recorded once and replayed every step, like a CUDA graph captured once: pipelines, bind groups and
 * uniform values are built at capture; a replay only issues setPipeline / setBindGroup / dispatch calls. Whatever
 * varies per step must come from buffers the step writes (inputs, indirect dispatch arguments).
 */
export class CapturedPass {
  constructor(
    readonly dispatches: readonly CapturedDispatch[],
    /** The uniform slots the captured dispatches bind (written once, at capture). */
    private readonly uniforms: UniformArena,
  ) {}

  destroy(): void {
    this.uniforms.destroy();
  }
}

/** Stands in for a compute pass encoder while a pass is captured: records instead of encoding. */
class CaptureEncoder {
  readonly dispatches: CapturedDispatch[] = [];
  private pipeline: GPUComputePipeline | null = null;
  private bindGroup: GPUBindGroup | null = null;

  setPipeline(p: GPUComputePipeline): void {
    this.pipeline = p;
  }

  setBindGroup(index: number, bg: GPUBindGroup): void {
    if (index !== 0) throw new SiftError('INTERNAL', 'capture: kernels bind group 0 only');
    this.bindGroup = bg;
  }

  dispatchWorkgroups(x: number, y = 1, z = 1): void {
    this.push(x, y, z, null, 0);
  }

  dispatchWorkgroupsIndirect(buffer: GPUBuffer, offset: number): void {
    this.push(0, 0, 0, buffer, offset);
  }

  private push(x: number, y: number, z: number, indirect: GPUBuffer | null, offset: number): void {
    if (!this.pipeline || !this.bindGroup)
      throw new SiftError('INTERNAL', 'capture: dispatch before pipeline/bind group');
    this.dispatches.push({ pipeline: this.pipeline, bindGroup: this.bindGroup, x, y, z, indirect, offset });
  }
}

/**
 * Read-back through a ring of persistent MAP_READ staging buffers (none created per step): `copy` encodes a copy
 * into the next staging buffer (grown when too small) and returns its reader, to await after the submit. A ring of
 * three lets a step be encoded while the read of the one before it is still pending.
 */
export class StagingRing {
  private readonly slots: { buffer: GPUBuffer | null; busy: boolean }[];
  private next = 0;

  constructor(
    private readonly gpu: Gpu,
    private readonly label: string,
    size = 3,
  ) {
    this.slots = Array.from({ length: size }, () => ({ buffer: null, busy: false }));
  }

  /** Copies the byte ranges `parts` of `src` (multiples of 4), packed in order, into the next staging buffer. */
  copy(
    enc: GPUCommandEncoder,
    src: GPUBuffer,
    parts: readonly { offset: number; size: number }[],
  ): () => Promise<ArrayBuffer> {
    const slot = this.slots[this.next];
    this.next = (this.next + 1) % this.slots.length;
    if (slot.busy) throw new SiftError('INTERNAL', `${this.label}: staging buffer reused before its read finished`);
    const size = parts.reduce((n, p) => n + p.size, 0);
    const bytes = Math.ceil(size / 4) * 4;
    if (!slot.buffer || slot.buffer.size < bytes) {
      slot.buffer?.destroy();
      slot.buffer = this.gpu.device.createBuffer({
        label: this.label,
        size: Math.max(256, bytes),
        usage: MAP_READ | COPY_DST,
      });
    }
    const buf = slot.buffer;
    let at = 0;
    for (const p of parts) {
      enc.copyBufferToBuffer(src, p.offset, buf, at, p.size);
      at += p.size;
    }
    slot.busy = true;
    return () =>
      this.gpu.mapRead(buf, bytes, size).finally(() => {
        slot.busy = false;
      });
  }

  destroy(): void {
    for (const s of this.slots) s.buffer?.destroy();
  }
}

export class Gpu {
  readonly device: GPUDevice;
  readonly caps: GpuCaps;
  /** Set once the device is lost; every later call throws DEVICE_LOST. */
  lostReason: string | null = null;
  private readonly lostPromise: Promise<never>;
  private readonly pipelines = new Map<string, PipelineEntry>();
  /** Pipelines whose shader declares struct Params -> the uniform declarations checked against it. */
  private readonly pipelineParams = new WeakMap<GPUComputePipeline, Set<ParamsSpec>>();
  /** The preprocessed source of every pipeline (bindGroup checks pools' slabs against it). */
  private readonly pipelineCode = new WeakMap<GPUComputePipeline, string>();
  private readonly count: GpuCounters = zeroCounters();
  /** Buffers of indirect dispatch arguments the host also holds (see registerHostArgs). */
  private readonly hostArgs = new Map<GPUBuffer, (byteOffset: number) => readonly [number, number, number]>();
  /** Keys of the pipelines created after `markWarm()` (none is expected in serving). */
  private coldPipelines: string[] | null = null;
  private uncaptured: string[] = [];
  /** Dawn's instance and adapter must stay reachable: if they are garbage-collected, Dawn aborts the process. */
  // biome-ignore lint/correctness/noUnusedPrivateClassMembers: held only to keep Dawn's objects alive
  private readonly keepAlive: unknown[];

  private constructor(device: GPUDevice, caps: GpuCaps, keepAlive: unknown[]) {
    this.device = device;
    this.keepAlive = keepAlive;
    this.caps = caps;
    this.lostPromise = device.lost.then((info) => {
      this.lostReason = `${info.reason ?? 'unknown'}: ${info.message}`;
      throw this.lostError();
    });
    this.lostPromise.catch(() => {}); // observed by callers through raceLost
    device.addEventListener('uncapturederror', (ev: Event) => {
      const msg = (ev as GPUUncapturedErrorEvent).error.message;
      this.uncaptured.push(msg);
      if (process.env.SIFT_GPU_DEBUG) process.stderr.write(`webgpu error: ${msg}\n`);
    });
  }

  /** Creates the GPU device, failing with a message that names the fix when no adapter exists. */
  static async create(opts: GpuOptions = {}): Promise<Gpu> {
    const envPoll = process.env.SIFT_GPU_POLL_MS;
    const givenPoll = envPoll !== undefined && envPoll.trim() !== '' ? Number(envPoll) : undefined;
    for (const [v, what] of [
      [givenPoll, `SIFT_GPU_POLL_MS=${envPoll}`],
      [opts.pollMs, `pollMs ${opts.pollMs}`],
    ] as const) {
      if (v !== undefined && !(Number.isFinite(v) && v >= 0 && v <= 100)) {
        throw new SiftError('CONFIG_INVALID', `${what}: milliseconds in [0, 100] expected`);
      }
    }
    const want = opts.adapter || undefined;
    const backend = opts.backend ?? process.env.SIFT_GPU_BACKEND;
    const flags: string[] = [];
    if (backend) flags.push(`backend=${backend}`);
    if (want) flags.push(`adapter=${want}`);
    const gpu = create(flags);
    let adapter: GPUAdapter | null;
    try {
      adapter = await gpu.requestAdapter({ powerPreference: 'high-performance' });
    } catch (e) {
      // Dawn throws "no suitable backends found\nAvailable adapters: ..." when adapter=NAME matches nothing
      const listed = parseAdapterList(String((e as Error).message));
      if (want) throw adapterNotFound(want, listed ?? (await listAdapters(backend)));
      throw new SiftError('NO_ADAPTER', `WebGPU could not open an adapter: ${(e as Error).message}`, { cause: e });
    }
    if (!adapter && want) throw adapterNotFound(want, await listAdapters(backend));
    if (!adapter) {
      throw new SiftError(
        'NO_ADAPTER',
        'no WebGPU adapter found. On a CPU-only Debian 12 machine install Mesa lavapipe >= 25 and the Vulkan loader ' +
          '(run `bash scripts/ensure-webgpu.sh` as root: apt-get install -t bookworm-backports libvulkan1 ' +
          'mesa-vulkan-drivers); on a GPU machine install the vendor driver with Vulkan support.',
      );
    }
    const info = adapter.info;
    // Dawn's adapter.info.device is the driver's name folded to [a-z0-9-] ("llvmpipe-llvm-15-0-6-256-bits-"); the
    // name Dawn lists adapters under ("llvmpipe (LLVM 15.0.6, 256 bits)") is the one people recognise.
    const listed = (await listAdapters(backend)).find((a) => foldAdapterName(a.name) === info.device);
    const displayName = listed?.name ?? (info.device || info.description || 'unknown');
    const name = `${displayName} ${info.device || ''} ${info.description || ''}`.trim();
    if (want && !name.toLowerCase().includes(want.toLowerCase())) {
      throw adapterNotFound(want, [{ name: displayName, backend: backend ?? '' }]);
    }
    const features: GPUFeatureName[] = [];
    const has = (f: string) => adapter.features.has(f);
    const shaderF16 = has('shader-f16') && !opts.disableF16 && !process.env.SIFT_DISABLE_F16;
    if (shaderF16) features.push('shader-f16');
    if (has('subgroups')) features.push('subgroups' as GPUFeatureName);
    if (has('timestamp-query')) features.push('timestamp-query');
    const L = adapter.limits;
    const requiredLimits: Record<string, number> = {
      maxStorageBufferBindingSize: L.maxStorageBufferBindingSize,
      maxBufferSize: L.maxBufferSize,
      maxComputeWorkgroupStorageSize: L.maxComputeWorkgroupStorageSize,
      maxComputeInvocationsPerWorkgroup: L.maxComputeInvocationsPerWorkgroup,
      maxComputeWorkgroupSizeX: L.maxComputeWorkgroupSizeX,
      maxComputeWorkgroupsPerDimension: L.maxComputeWorkgroupsPerDimension,
      maxStorageBuffersPerShaderStage: L.maxStorageBuffersPerShaderStage,
    };
    const device = await adapter.requestDevice({ requiredFeatures: features, requiredLimits, label: 'sift' });
    const lname = name.toLowerCase();
    const caps: GpuCaps = {
      adapterName: displayName,
      description: info.description || '',
      vendor: info.vendor || '',
      shaderF16,
      subgroups: has('subgroups'),
      subgroupMinSize: (info as { subgroupMinSize?: number }).subgroupMinSize ?? 0,
      subgroupMaxSize: (info as { subgroupMaxSize?: number }).subgroupMaxSize ?? 0,
      timestampQuery: has('timestamp-query'),
      maxStorageBufferBindingSize: device.limits.maxStorageBufferBindingSize,
      maxBufferSize: device.limits.maxBufferSize,
      maxComputeWorkgroupStorageSize: device.limits.maxComputeWorkgroupStorageSize,
      maxComputeInvocationsPerWorkgroup: device.limits.maxComputeInvocationsPerWorkgroup,
      maxComputeWorkgroupsPerDimension: device.limits.maxComputeWorkgroupsPerDimension,
      maxStorageBuffersPerShaderStage: device.limits.maxStorageBuffersPerShaderStage,
      minUniformBufferOffsetAlignment: device.limits.minUniformBufferOffsetAlignment,
      minStorageBufferOffsetAlignment: device.limits.minStorageBufferOffsetAlignment,
      isCpu: /llvmpipe|lavapipe|swiftshader|cpu/.test(lname),
      packed4x8:
        (gpu as { wgslLanguageFeatures?: ReadonlySet<string> }).wgslLanguageFeatures?.has(
          'packed_4x8_integer_dot_product',
        ) ?? false,
    };
    const pollMs = opts.pollMs ?? givenPoll ?? (caps.isCpu ? 1 : 0);
    if (pollMs > 0 || dawnPolling.installed) throttleDawnPolling(pollMs);
    return new Gpu(device, caps, [gpu, adapter]);
  }

  lostError(): SiftError {
    return new SiftError('DEVICE_LOST', `the GPU device was lost (${this.lostReason}); restart sift to recover`);
  }

  private checkLost(): void {
    if (this.lostReason !== null) throw this.lostError();
  }

  /** Resolves with p, or rejects with DEVICE_LOST if the device is lost first (never hangs on a dead device). */
  raceLost<T>(p: Promise<T>): Promise<T> {
    this.checkLost();
    return Promise.race([p, this.lostPromise]);
  }

  /** Validation errors Dawn reported since the last call (normally none). */
  takeErrors(): string[] {
    const e = this.uncaptured;
    this.uncaptured = [];
    return e;
  }

  /** A snapshot of the runtime's counters (see GpuCounters). */
  counters(): GpuCounters {
    return { ...this.count };
  }

  /**
   * Marks the end of warm-up: from here on every pipeline created is listed by `pipelinesAfterWarm()` (a pipeline
   * compiled while serving costs 0.1-6 s on lavapipe and stalls every running request).
   */
  markWarm(): void {
    this.coldPipelines = [];
  }

  /** Keys of the pipelines created since `markWarm()` (empty when warm-up covered everything). */
  pipelinesAfterWarm(): readonly string[] {
    return this.coldPipelines ?? [];
  }

  /**
   * A buffer of `size` bytes (padded to 16). A storage buffer is bound whole by the kernels, so it must fit the
   * adapter's maxStorageBufferBindingSize (larger data is split by its owner, as weights and KV storage are): one
   * that does not is refused here, with the limit named, rather than failing validation at every dispatch.
   */
  createBuffer(label: string, size: number, usage = STORAGE | COPY_SRC | COPY_DST): GPUBuffer {
    this.checkLost();
    const padded = Math.max(16, Math.ceil(size / 16) * 16);
    if (padded > this.caps.maxBufferSize) {
      throw new SiftError(
        'GPU_LIMIT',
        `buffer ${label} of ${size} bytes exceeds the adapter's maxBufferSize ${this.caps.maxBufferSize}`,
      );
    }
    if (usage & STORAGE && padded > this.caps.maxStorageBufferBindingSize) {
      throw new SiftError(
        'GPU_LIMIT',
        `storage buffer ${label} needs ${size} bytes; the adapter binds at most ${this.caps.maxStorageBufferBindingSize} ` +
          '(maxStorageBufferBindingSize): lower --max-seqs, --max-batch-tokens or --max-context',
      );
    }
    return this.device.createBuffer({ label, size: padded, usage });
  }

  /** Creates a storage buffer holding `data` (padded to 16 bytes). */
  upload(label: string, data: ArrayBufferView, usage = STORAGE | COPY_SRC | COPY_DST): GPUBuffer {
    const buf = this.createBuffer(label, data.byteLength, usage);
    this.write(buf, data);
    return buf;
  }

  write(buf: GPUBuffer, data: ArrayBufferView, offset = 0): void {
    this.checkLost();
    const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    if (bytes.byteLength % 4 === 0) {
      this.writeRaw(buf, offset, bytes, 0, bytes.byteLength);
    } else {
      const padded = new Uint8Array(Math.ceil(bytes.byteLength / 4) * 4);
      padded.set(bytes);
      this.writeRaw(buf, offset, padded, 0, padded.byteLength);
    }
  }

  /** queue.writeBuffer of `size` bytes of `data` from `dataOffset` (both multiples of 4), counted. */
  writeRaw(buf: GPUBuffer, offset: number, data: Uint8Array, dataOffset: number, size: number): void {
    this.count.writeBufferCalls++;
    this.count.writeBufferBytes += size;
    this.device.queue.writeBuffer(buf, offset, data, dataOffset, size);
  }

  /** queue.submit, counted. */
  submit(buffers: GPUCommandBuffer[]): void {
    this.checkLost();
    this.count.submits++;
    this.device.queue.submit(buffers);
  }

  /** Maps a staging buffer (after the submit that filled it) and copies `size` bytes out, counted. */
  async mapRead(staging: GPUBuffer, bytes: number, size: number): Promise<ArrayBuffer> {
    this.count.readbacks++;
    this.count.readbackBytes += bytes;
    // The host waits here: it needs the bytes (sampled tokens, logits) to decide what the next step runs.
    await this.raceLost(staging.mapAsync(MAP_READ, 0, bytes));
    try {
      return staging.getMappedRange(0, bytes).slice(0, size);
    } finally {
      if (this.lostReason === null) staging.unmap();
    }
  }

  /** Copies `size` bytes from `buf` back to the host. */
  async read(buf: GPUBuffer, offset = 0, size = buf.size - offset): Promise<ArrayBuffer> {
    this.checkLost();
    const staging = this.device.createBuffer({
      label: 'readback',
      size: Math.ceil(size / 4) * 4,
      usage: MAP_READ | COPY_DST,
    });
    const enc = this.device.createCommandEncoder();
    enc.copyBufferToBuffer(buf, offset, staging, 0, Math.ceil(size / 4) * 4);
    this.submit([enc.finish()]);
    this.count.readbacks++;
    this.count.readbackBytes += Math.ceil(size / 4) * 4;
    try {
      await this.raceLost(staging.mapAsync(MAP_READ));
      return staging.getMappedRange().slice(0, size);
    } finally {
      if (this.lostReason === null) staging.unmap();
      staging.destroy();
    }
  }

  async readF32(buf: GPUBuffer, count?: number, offsetElems = 0): Promise<Float32Array> {
    const n = count ?? buf.size / 4 - offsetElems;
    return new Float32Array(await this.read(buf, offsetElems * 4, n * 4));
  }

  async readU32(buf: GPUBuffer, count?: number, offsetElems = 0): Promise<Uint32Array> {
    const n = count ?? buf.size / 4 - offsetElems;
    return new Uint32Array(await this.read(buf, offsetElems * 4, n * 4));
  }

  /** Waits until all submitted work has finished. */
  async sync(): Promise<void> {
    await this.raceLost(this.device.queue.onSubmittedWorkDone());
  }

  /**
   * A compute pipeline for shaders/<name>.wgsl with `defines` (preprocessor) and `constants` (WGSL overrides, each
   * must be declared), cached under a key like `matvec|{"W":"f16"}|{"WG":64}`. A shader that declares `struct Params`
   * needs `params`, the wrapper's declaration of it, which is checked against the struct once per pipeline (field
   * names, order, types: shaders/lib/params.ts).
   */
  pipeline(
    name: string,
    defines: Defines = {},
    constants: Record<string, number> = {},
    params?: ParamsSpec,
  ): GPUComputePipeline {
    this.checkLost();
    const key = `${name}|${JSON.stringify(defines)}|${JSON.stringify(constants)}`;
    let e = this.pipelines.get(key);
    if (!e) {
      e = this.compile(name, key, loadWgsl(name, defines), constants, params);
      this.pipelines.set(key, e);
      this.count.pipelines++;
      this.coldPipelines?.push(key);
    } else this.checkParams(e, name, params);
    return e.pipeline;
  }

  /**
   * A pipeline from preprocessed WGSL (`label` names it in errors), with the same checks as `pipeline` but not
   * cached: for probe shaders in tests.
   */
  pipelineFromCode(
    label: string,
    code: string,
    constants: Record<string, number> = {},
    params?: ParamsSpec,
  ): GPUComputePipeline {
    this.checkLost();
    return this.compile(label, label, code, constants, params).pipeline;
  }

  private compile(
    name: string,
    key: string,
    code: string,
    constants: Record<string, number>,
    params: ParamsSpec | undefined,
  ): PipelineEntry {
    checkOverrides(name, code, constants);
    this.checkStorageBindings(name, code);
    const checked = parseParamsStruct(code) ? new Set<ParamsSpec>() : null;
    this.checkParams({ code, params: checked }, name, params); // before compiling: a mismatch fails at creation
    const module = this.device.createShaderModule({ label: name, code });
    const pipeline = this.device.createComputePipeline({
      label: key,
      layout: 'auto',
      compute: { module, entryPoint: 'main', constants },
    });
    if (checked) this.pipelineParams.set(pipeline, checked);
    this.pipelineCode.set(pipeline, code);
    return { pipeline, code, params: checked };
  }

  /**
   * Throws GPU_LIMIT when a shader declares more storage buffers than the adapter binds per stage: it happens when
   * pools split into slabs (shaders/lib/slabs.ts) add more bindings than a kernel has room for, so the message names
   * them. Warm-up compiles every pipeline, so such a configuration is refused at startup.
   */
  private checkStorageBindings(name: string, code: string): void {
    const decls = [...code.matchAll(/var<storage,\s*(?:read|read_write)>\s*([A-Za-z_]\w*)/g)].map((m) => m[1]);
    const limit = this.caps.maxStorageBuffersPerShaderStage;
    if (decls.length <= limit) return;
    const names = new Set(decls);
    const slabs = new Map<string, number>();
    for (const d of decls) {
      const m = d.match(/^(.*)_(\d+)$/);
      if (m && names.has(m[1])) slabs.set(m[1], Math.max(slabs.get(m[1]) ?? 1, Number(m[2]) + 1));
    }
    const split = [...slabs].map(([b, n]) => `${b} ${n} slabs`);
    throw new SiftError(
      'GPU_LIMIT',
      `${name}: ${decls.length} storage buffers exceed the adapter's maxStorageBuffersPerShaderStage ${limit}` +
        (split.length
          ? ` (pools split by maxStorageBufferBindingSize ${this.caps.maxStorageBufferBindingSize}: ${split.join(', ')}); lower --kv-cache-mib or --max-seqs`
          : ''),
    );
  }

  /** Checks `params` against the shader's struct Params once per (pipeline, declaration). */
  private checkParams(e: Omit<PipelineEntry, 'pipeline'>, name: string, params: ParamsSpec | undefined): void {
    if (!e.params) {
      if (params) throw new SiftError('INTERNAL', `${params.kernel}: ${name}.wgsl declares no struct Params`);
      return;
    }
    if (!params) {
      throw new SiftError(
        'INTERNAL',
        `${name}.wgsl declares struct Params: its wrapper must pass the declaration it packs uniforms with (defineParams)`,
      );
    }
    if (e.params.has(params)) return;
    params.check(name, e.code);
    e.params.add(params);
  }

  /**
   * Bind group 0 of `pipeline` from bindings in @binding order; null = a binding number the shader leaves out. A
   * pool split into slabs (shaders/lib/slabs.ts) at binding b binds slab 0 there and slab s at slabBinding(b, s);
   * the shader must declare exactly that many slabs (`//#slabs`, defines from slabDefines).
   */
  bindGroup(pipeline: GPUComputePipeline, bindings: readonly (KernelBinding | null)[], label?: string): GPUBindGroup {
    this.count.bindGroups++;
    const entries: GPUBindGroupEntry[] = [];
    bindings.forEach((b, i) => {
      if (!b) return;
      if (!(b instanceof Slabs)) {
        entries.push({ binding: i, resource: toResource(b) });
        return;
      }
      const code = this.pipelineCode.get(pipeline) ?? '';
      const n = b.numSlabs;
      if (
        n > 1 &&
        (!code.includes(`@binding(${slabBinding(i, n - 1)})`) || code.includes(`@binding(${slabBinding(i, n)})`))
      ) {
        throw new SiftError(
          'INTERNAL',
          `${pipeline.label}: binding ${i} is a pool of ${n} slabs, which the shader does not declare (//#slabs and slabDefines)`,
        );
      }
      b.slabs.forEach((slab, s) => {
        entries.push({ binding: s === 0 ? i : slabBinding(i, s), resource: toResource(slab) });
      });
    });
    return this.device.createBindGroup({ label, layout: pipeline.getBindGroupLayout(0), entries });
  }

  /** Encodes one dispatch into `pass`. */
  dispatch(
    pass: GPUComputePassEncoder,
    pipeline: GPUComputePipeline,
    bindings: readonly (KernelBinding | null)[],
    x: number,
    y = 1,
    z = 1,
  ): void {
    const max = this.caps.maxComputeWorkgroupsPerDimension;
    if (x > max || y > max || z > max) {
      throw new SiftError(
        'GPU_LIMIT',
        `dispatch ${x}x${y}x${z} exceeds maxComputeWorkgroupsPerDimension ${max} (${pipeline.label})`,
      );
    }
    this.checkUniforms(pipeline, bindings);
    if (x === 0 || y === 0 || z === 0) return;
    if (!(pass instanceof CaptureEncoder)) this.count.dispatches++;
    pass.setPipeline(pipeline);
    pass.setBindGroup(0, this.bindGroup(pipeline, bindings));
    pass.dispatchWorkgroups(x, y, z);
  }

  /** Throws unless the dispatch's uniform slot was packed by a declaration checked against the pipeline's Params. */
  private checkUniforms(pipeline: GPUComputePipeline, bindings: readonly (KernelBinding | null)[]): void {
    const checked = this.pipelineParams.get(pipeline);
    if (!checked) return;
    const slot = bindings.find(
      (b): b is UniformSlot => b !== null && !(b instanceof Slabs) && 'params' in b && b.params !== undefined,
    );
    if (!slot?.params || !checked.has(slot.params)) {
      throw new SiftError(
        'INTERNAL',
        `dispatch of ${pipeline.label}: its uniforms must be packed by a declaration checked against its struct ` +
          `Params (got ${slot?.params ? `${slot.params.kernel}'s` : 'none'})`,
      );
    }
  }

  /**
   * Declares that the host writes the indirect dispatch arguments in `buffer` and can read them back (`read`: the
   * grid at a byte offset, as the step wrote it). Dispatches "indirect" from such a buffer are encoded as direct
   * dispatches of the host's grid: Dawn validates every indirect dispatch with extra work of its own (100-400 us of
   * host time each, measured on lavapipe), while the kernels still read counts from the same buffer on the device.
   */
  registerHostArgs(buffer: GPUBuffer, read: (byteOffset: number) => readonly [number, number, number]): void {
    this.hostArgs.set(buffer, read);
  }

  unregisterHostArgs(buffer: GPUBuffer): void {
    this.hostArgs.delete(buffer);
  }

  /**
   * Encodes one dispatch whose grid is the 3 u32 at byte `offset` of `args` when the pass runs (when captured: at
   * each replay), directly from the host's copy for buffers registered with registerHostArgs.
   */
  dispatchIndirect(
    pass: GPUComputePassEncoder,
    pipeline: GPUComputePipeline,
    bindings: readonly (KernelBinding | null)[],
    args: GPUBuffer,
    offset: number,
  ): void {
    this.checkUniforms(pipeline, bindings);
    const capturing = pass instanceof CaptureEncoder;
    const read = capturing ? undefined : this.hostArgs.get(args);
    const grid = read?.(offset);
    if (grid && (grid[0] === 0 || grid[1] === 0 || grid[2] === 0)) return;
    if (!capturing) this.count.dispatches++;
    pass.setPipeline(pipeline);
    pass.setBindGroup(0, this.bindGroup(pipeline, bindings));
    if (grid) pass.dispatchWorkgroups(grid[0], grid[1], grid[2]);
    else pass.dispatchWorkgroupsIndirect(args, offset);
  }

  /**
   * Records the dispatches `fn` encodes (through the kernel wrappers, as into a real pass) with their own uniform
   * arena, written once: the returned pass replays them.
   */
  capture(fn: (pass: GPUComputePassEncoder, arena: UniformArena) => void): CapturedPass {
    this.checkLost();
    const arena = new UniformArena(this);
    const rec = new CaptureEncoder();
    fn(rec as unknown as GPUComputePassEncoder, arena);
    arena.flush();
    return new CapturedPass(rec.dispatches, arena);
  }

  /**
   * Replays a captured pass into `pass`: no bind group, pipeline or uniform is created or written. Indirect grids
   * from host-registered buffers are read from the host's copy (see registerHostArgs); empty grids are skipped.
   */
  replay(pass: GPUComputePassEncoder, captured: CapturedPass): void {
    let last: GPUComputePipeline | null = null;
    let n = 0;
    for (const d of captured.dispatches) {
      let x = d.x;
      let y = d.y;
      let z = d.z;
      const read = d.indirect ? this.hostArgs.get(d.indirect) : undefined;
      if (d.indirect && read) [x, y, z] = read(d.offset);
      if (!(d.indirect && !read) && (x === 0 || y === 0 || z === 0)) continue;
      if (d.pipeline !== last) pass.setPipeline(d.pipeline);
      last = d.pipeline;
      pass.setBindGroup(0, d.bindGroup);
      if (d.indirect && !read) pass.dispatchWorkgroupsIndirect(d.indirect, d.offset);
      else pass.dispatchWorkgroups(x, y, z);
      n++;
    }
    this.count.dispatches += n;
  }

  /** Runs `fn` inside one compute pass and submits it (uniform arena flushed first). */
  run(fn: (pass: GPUComputePassEncoder) => void, arena?: UniformArena): void {
    this.checkLost();
    const enc = this.device.createCommandEncoder();
    const pass = enc.beginComputePass();
    fn(pass);
    pass.end();
    arena?.flush();
    this.submit([enc.finish()]);
  }

  destroy(): void {
    this.pipelines.clear();
    this.device.destroy();
  }
}

/** A WebGPU adapter as Dawn lists it. */
export interface AdapterListing {
  /** The driver's device name, e.g. "llvmpipe (LLVM 15.0.6, 256 bits)". */
  name: string;
  /** Dawn backend, e.g. "vulkan". */
  backend: string;
}

/** How Dawn folds a device name into adapter.info.device: lowercase, each run of other characters one "-". */
export function foldAdapterName(name: string): string {
  return name.toLowerCase().replace(/[^a-z0-9]+/g, '-');
}

/** The adapters in Dawn's "Available adapters:" listing, or null when `message` holds none. */
export function parseAdapterList(message: string): AdapterListing[] | null {
  const at = message.indexOf('Available adapters:');
  if (at < 0) return null;
  const out: AdapterListing[] = [];
  for (const m of message.slice(at).matchAll(/backend:\s*'([^']*)',\s*name:\s*'([^']*)'/g)) {
    out.push({ backend: m[1], name: m[2] });
  }
  return out;
}

/**
 * Every adapter Dawn can open (on `backend`, if given), by asking for one whose name cannot match: Dawn then lists
 * the adapters in its error. Costs a few tens of ms; an empty list when Dawn lists none.
 */
export async function listAdapters(backend?: string): Promise<AdapterListing[]> {
  const flags = ['adapter=\u0001no adapter has this name'];
  if (backend) flags.unshift(`backend=${backend}`);
  try {
    await create(flags).requestAdapter();
  } catch (e) {
    return parseAdapterList(String((e as Error).message)) ?? [];
  }
  return [];
}

function adapterNotFound(want: string, available: AdapterListing[]): SiftError {
  const names = available.map((a) => `"${a.name}"${a.backend ? ` (${a.backend})` : ''}`);
  return new SiftError(
    'ADAPTER_NOT_FOUND',
    `no WebGPU adapter matches "${want}"; available: ${names.length ? names.join(', ') : 'none'}. ` +
      'Pass part of one of these names to --adapter (env SIFT_ENGINE_ADAPTER), or leave it empty for the default.',
  );
}
