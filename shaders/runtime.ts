/**
 * The WebGPU runtime: the ground floor every kernel wrapper stands on.
 * Creates the device through Dawn's Node bindings (npm `webgpu`), picks the adapter, requests the limits and
 * features the kernels use, and offers buffers, read-back, a pipeline cache, WGSL loading and a uniform arena.
 */
import { create, globals } from 'webgpu';
import { SiftError } from '../config/errors.js';
import { projectRoot } from '../config/paths.js';
import { type ParamFields, type ParamsSpec, type ParamValues, parseParamsStruct } from './lib/params.js';
import { checkOverrides, type Defines, preprocessWgsl } from './lib/wgsl.js';

export { projectRoot };

Object.assign(globalThis, globals);

export interface GpuOptions {
  /** Choose an adapter whose name contains this (case-insensitive); empty = Dawn's default. */
  adapter?: string;
  /** Dawn backend, e.g. "vulkan"; default Dawn's choice. Also env SIFT_GPU_BACKEND. */
  backend?: string;
  /** Prefer the packed-u32 16-bit path even where shader-f16 exists (tests use this to cover both). */
  disableF16?: boolean;
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

export const BufferUsage = { STORAGE, COPY_SRC, COPY_DST, MAP_READ, UNIFORM } as const;

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
      if (len > 0) this.gpu.device.queue.writeBuffer(this.chunks[i].buffer, 0, this.chunks[i].data, 0, len);
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

export class Gpu {
  readonly device: GPUDevice;
  readonly caps: GpuCaps;
  /** Set once the device is lost; every later call throws DEVICE_LOST. */
  lostReason: string | null = null;
  private readonly lostPromise: Promise<never>;
  private readonly pipelines = new Map<string, PipelineEntry>();
  /** Pipelines whose shader declares struct Params -> the uniform declarations checked against it. */
  private readonly pipelineParams = new WeakMap<GPUComputePipeline, Set<ParamsSpec>>();
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
      this.device.queue.writeBuffer(buf, offset, bytes);
    } else {
      const padded = new Uint8Array(Math.ceil(bytes.byteLength / 4) * 4);
      padded.set(bytes);
      this.device.queue.writeBuffer(buf, offset, padded);
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
    this.device.queue.submit([enc.finish()]);
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
    const checked = parseParamsStruct(code) ? new Set<ParamsSpec>() : null;
    this.checkParams({ code, params: checked }, name, params); // before compiling: a mismatch fails at creation
    const module = this.device.createShaderModule({ label: name, code });
    const pipeline = this.device.createComputePipeline({
      label: key,
      layout: 'auto',
      compute: { module, entryPoint: 'main', constants },
    });
    if (checked) this.pipelineParams.set(pipeline, checked);
    return { pipeline, code, params: checked };
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

  /** Bind group 0 of `pipeline` from bindings in @binding order. */
  bindGroup(pipeline: GPUComputePipeline, bindings: Binding[], label?: string): GPUBindGroup {
    return this.device.createBindGroup({
      label,
      layout: pipeline.getBindGroupLayout(0),
      entries: bindings.map((b, i) => ({ binding: i, resource: toResource(b) })),
    });
  }

  /** Encodes one dispatch into `pass`. */
  dispatch(
    pass: GPUComputePassEncoder,
    pipeline: GPUComputePipeline,
    bindings: Binding[],
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
    const checked = this.pipelineParams.get(pipeline);
    if (checked) {
      const slot = bindings.find((b): b is UniformSlot => 'params' in b && b.params !== undefined);
      if (!slot?.params || !checked.has(slot.params)) {
        throw new SiftError(
          'INTERNAL',
          `dispatch of ${pipeline.label}: its uniforms must be packed by a declaration checked against its struct ` +
            `Params (got ${slot?.params ? `${slot.params.kernel}'s` : 'none'})`,
        );
      }
    }
    if (x === 0 || y === 0 || z === 0) return;
    pass.setPipeline(pipeline);
    pass.setBindGroup(0, this.bindGroup(pipeline, bindings));
    pass.dispatchWorkgroups(x, y, z);
  }

  /** Runs `fn` inside one compute pass and submits it (uniform arena flushed first). */
  run(fn: (pass: GPUComputePassEncoder) => void, arena?: UniformArena): void {
    this.checkLost();
    const enc = this.device.createCommandEncoder();
    const pass = enc.beginComputePass();
    fn(pass);
    pass.end();
    arena?.flush();
    this.device.queue.submit([enc.finish()]);
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
