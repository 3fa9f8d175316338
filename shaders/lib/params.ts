/**
 * Kernel uniforms declared by name. A wrapper declares its WGSL `struct Params` once, in order, with types:
 *
 *   const PARAMS = defineParams('attention', { tokens: 'u32', nHeads: 'u32', scale: 'f32', ... });
 *
 * and packs each dispatch's values by name (`arena.params(PARAMS, { tokens: T, ... })`, type-checked by tsc).
 * When a pipeline is created (Gpu.pipeline) the declaration is checked against the struct parsed from the
 * preprocessed WGSL: the same field names in the same order with the same types, so a wrapper and its shader cannot
 * drift apart silently; Gpu.dispatch then checks the uniform slot was packed by a declaration checked against that
 * pipeline. WGSL fields whose name starts with `_` are padding: they are not declared in TS and are written as 0.
 *
 * Layout follows WGSL's uniform address space: scalars (u32, i32, f32) at 4-byte alignment, vecN at 8 / 16, arrays
 * with a 16-byte multiple stride; a struct is padded to 16 bytes. Values are checked as they are packed: a u32 must
 * be an integer in [0, 2^32), an i32 in [-2^31, 2^31), an f32 finite; vectors and arrays take exactly their number
 * of components.
 */
import { SiftError } from '../../config/errors.js';

export type ScalarType = 'u32' | 'i32' | 'f32';
type VecType = `vec${2 | 3 | 4}<${ScalarType}>`;
export type ParamType = ScalarType | VecType | `array<${ScalarType | VecType}, ${number}>`;
export type ParamFields = Record<string, ParamType>;
/** The values of a declaration: a number per scalar, an array of components per vector or array. */
export type ParamValues<F extends ParamFields> = {
  [K in keyof F]: F[K] extends ScalarType ? number : ArrayLike<number>;
};

/** One field's place in the uniform block. */
interface FieldLayout {
  name: string;
  type: string; // canonical WGSL spelling, e.g. array<vec4<u32>, 16>
  scalar: ScalarType;
  offset: number; // bytes from the start of the struct
  components: number; // scalars in the field (1 for a scalar)
  vec: number; // components per element (1 scalar, 2..4 vector)
  stride: number; // bytes between elements (arrays; the element size otherwise)
  align: number;
  size: number;
}

const ALIASES: Record<string, string> = {
  vec2u: 'vec2<u32>',
  vec3u: 'vec3<u32>',
  vec4u: 'vec4<u32>',
  vec2i: 'vec2<i32>',
  vec3i: 'vec3<i32>',
  vec4i: 'vec4<i32>',
  vec2f: 'vec2<f32>',
  vec3f: 'vec3<f32>',
  vec4f: 'vec4<f32>',
};

/** Canonical spelling of a WGSL type: no spaces except after commas, vecNx aliases expanded. */
function canonical(type: string): string {
  return type
    .replace(/\s+/g, '')
    .replace(/\b(vec[234][uif])\b/g, (a) => ALIASES[a])
    .replace(/,/g, ', ');
}

const roundUp = (n: number, to: number) => Math.ceil(n / to) * to;

/** Layout of one element type (a scalar or vector), or undefined for a type uniforms here do not support. */
function elementLayout(t: string): { scalar: ScalarType; vec: number; align: number; size: number } | undefined {
  let m: RegExpMatchArray | null;
  if ((m = t.match(/^(u32|i32|f32)$/))) return { scalar: m[1] as ScalarType, vec: 1, align: 4, size: 4 };
  if ((m = t.match(/^vec([234])<(u32|i32|f32)>$/))) {
    const n = Number(m[1]);
    return { scalar: m[2] as ScalarType, vec: n, align: n === 2 ? 8 : 16, size: 4 * n };
  }
  return undefined;
}

/** Lays out fields in order; `where` names the declaration in errors. */
function layOut(where: string, fields: [name: string, type: string][]): { fields: FieldLayout[]; size: number } {
  const out: FieldLayout[] = [];
  let offset = 0;
  let structAlign = 4;
  for (const [name, raw] of fields) {
    const type = canonical(raw);
    const arr = type.match(/^array<(.+), (\d+)>$/);
    const el = elementLayout(arr ? arr[1] : type);
    if (!el) throw new SiftError('INTERNAL', `${where}: field ${name}: type ${type} is not supported in uniforms`);
    let f: Omit<FieldLayout, 'offset'>;
    if (arr) {
      const count = Number(arr[2]);
      const stride = roundUp(el.size, el.align);
      if (stride % 16 !== 0 || count < 1) {
        throw new SiftError('INTERNAL', `${where}: field ${name}: ${type} needs a 16-byte element stride in a uniform`);
      }
      f = {
        name,
        type,
        scalar: el.scalar,
        components: count * el.vec,
        vec: el.vec,
        stride,
        align: 16,
        size: count * stride,
      };
    } else {
      f = {
        name,
        type,
        scalar: el.scalar,
        components: el.vec,
        vec: el.vec,
        stride: el.size,
        align: el.align,
        size: el.size,
      };
    }
    offset = roundUp(offset, f.align);
    out.push({ ...f, offset });
    offset += f.size;
    structAlign = Math.max(structAlign, f.align);
  }
  return { fields: out, size: roundUp(offset, structAlign) };
}

/** The fields of `struct Params` in WGSL source (comments ignored), or undefined when there is none. */
export function parseParamsStruct(code: string): [name: string, type: string][] | undefined {
  const src = code.replace(/\/\*[\s\S]*?\*\//g, '').replace(/\/\/[^\n]*/g, '');
  const m = src.match(/\bstruct\s+Params\s*\{/);
  if (!m || m.index === undefined) return undefined;
  const start = m.index + m[0].length;
  const end = src.indexOf('}', start);
  if (end < 0) throw new SiftError('INTERNAL', 'struct Params is not closed');
  // Split members at top-level commas (types such as array<vec4<u32>, 16> hold commas inside <>).
  const members: string[] = [];
  let depth = 0;
  let cur = '';
  for (const ch of src.slice(start, end)) {
    if (ch === '<') depth++;
    if (ch === '>') depth--;
    if (ch === ',' && depth === 0) {
      members.push(cur);
      cur = '';
    } else cur += ch;
  }
  members.push(cur);
  return members
    .map((s) => s.trim())
    .filter((s) => s.length > 0)
    .map((s) => {
      const f = s.match(/^([A-Za-z_]\w*)\s*:\s*(.+)$/s);
      if (!f)
        throw new SiftError('INTERNAL', `struct Params: cannot read member "${s}" (attributes are not supported)`);
      return [f[1], canonical(f[2])];
    });
}

const describe = (fields: { name: string; type: string }[]) => fields.map((f) => `${f.name}: ${f.type}`).join(', ');

export class ParamsSpec<F extends ParamFields = ParamFields> {
  /** Bytes of the uniform block (a multiple of 16). */
  readonly bytes: number;
  private readonly layout: FieldLayout[];

  constructor(
    /** Kernel name used in errors. */
    readonly kernel: string,
    fields: F,
  ) {
    const entries = Object.entries(fields);
    const pad = entries.find(([n]) => n.startsWith('_'));
    if (pad)
      throw new SiftError('INTERNAL', `${kernel}: params field ${pad[0]}: padding is WGSL's alone, do not declare it`);
    const l = layOut(`${kernel} params`, entries);
    this.layout = l.fields;
    this.bytes = Math.max(16, roundUp(l.size, 16));
  }

  /**
   * Throws unless `struct Params` of the preprocessed WGSL `code` of `shader` declares exactly these fields, in this
   * order, with these types, at the same offsets (padding fields `_...` aside).
   */
  check(shader: string, code: string): void {
    const parsed = parseParamsStruct(code);
    if (!parsed) throw new SiftError('INTERNAL', `${this.kernel}: ${shader}.wgsl declares no struct Params`);
    const wgsl = layOut(`${shader}.wgsl struct Params`, parsed);
    const named = wgsl.fields.filter((f) => !f.name.startsWith('_'));
    const bad = (what: string): never => {
      throw new SiftError(
        'INTERNAL',
        `${this.kernel}: uniforms do not match struct Params of ${shader}.wgsl: ${what}\n` +
          `  TS:   ${describe(this.layout)}\n  WGSL: ${describe(named)}`,
      );
    };
    const n = Math.max(named.length, this.layout.length);
    for (let i = 0; i < n; i++) {
      const t = this.layout[i];
      const w = named[i];
      if (!t)
        bad(
          `field ${i} (${w.name}: ${w.type}) is not declared in TS (${named.length} fields vs ${this.layout.length})`,
        );
      if (!w)
        bad(
          `field ${i} (${t.name}: ${t.type}) is not in the WGSL struct (${this.layout.length} fields vs ${named.length})`,
        );
      if (t.name !== w.name) bad(`field ${i} is ${t.name} in TS but ${w.name} in WGSL`);
      if (t.type !== w.type) bad(`field ${t.name} is ${t.type} in TS but ${w.type} in WGSL`);
      if (t.offset !== w.offset)
        bad(`field ${t.name} sits at byte ${t.offset} in TS but ${w.offset} in WGSL (padding?)`);
    }
    if (this.bytes < wgsl.size) bad(`the struct takes ${wgsl.size} bytes, the TS block ${this.bytes}`);
  }

  /** Writes `values` at `offset` of `dv` (padding and gaps 0). */
  write(dv: DataView, offset: number, values: ParamValues<F>): void {
    const v = values as Record<string, number | ArrayLike<number>>;
    for (let i = offset; i < offset + this.bytes; i += 4) dv.setUint32(i, 0, true);
    for (const f of this.layout) {
      const x = v[f.name];
      if (f.components === 1 && f.stride === 4) {
        if (typeof x !== 'number') this.badValue(f, x);
        this.put(dv, offset + f.offset, f, x as number);
        continue;
      }
      if (typeof x !== 'object' || x === null || x.length !== f.components) this.badValue(f, x);
      const arr = x as ArrayLike<number>;
      for (let c = 0; c < f.components; c++) {
        const at = offset + f.offset + Math.floor(c / f.vec) * f.stride + (c % f.vec) * 4;
        this.put(dv, at, f, arr[c]);
      }
    }
  }

  /** The uniform block as bytes (tests; dispatches write straight into the uniform arena). */
  pack(values: ParamValues<F>): Uint8Array {
    const out = new Uint8Array(this.bytes);
    this.write(new DataView(out.buffer), 0, values);
    return out;
  }

  private put(dv: DataView, at: number, f: FieldLayout, x: number): void {
    if (f.scalar === 'u32') {
      if (!Number.isInteger(x) || x < 0 || x > 0xffffffff) this.badValue(f, x);
      dv.setUint32(at, x, true);
    } else if (f.scalar === 'i32') {
      if (!Number.isInteger(x) || x < -(2 ** 31) || x >= 2 ** 31) this.badValue(f, x);
      dv.setInt32(at, x, true);
    } else {
      if (typeof x !== 'number' || !Number.isFinite(x)) this.badValue(f, x);
      dv.setFloat32(at, x, true);
    }
  }

  private badValue(f: FieldLayout, x: unknown): never {
    const shown = typeof x === 'object' && x !== null ? `${(x as ArrayLike<number>).length} values` : String(x);
    const want = f.components === 1 && f.stride === 4 ? `a ${f.scalar}` : `${f.components} ${f.scalar} values`;
    throw new SiftError('INTERNAL', `${this.kernel}: uniform ${f.name}: ${shown} is not ${want} (${f.type})`);
  }
}

/** Declares a kernel's uniforms: the fields of its WGSL `struct Params`, in order, with their WGSL types. */
export function defineParams<const F extends ParamFields>(kernel: string, fields: F): ParamsSpec<F> {
  return new ParamsSpec(kernel, fields);
}
