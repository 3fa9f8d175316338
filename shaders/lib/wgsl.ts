/**
 * The WGSL preprocessor every kernel is loaded through, plus the check of a pipeline's override constants. Plain
 * text work: no WebGPU, so tests/kernels/wgsl.test.ts runs it without an adapter.
 *
 * Directives (a line holding only the directive, `//` first so an unprocessed file is still valid WGSL):
 *   //#include lib/softmax   inlines shaders/lib/softmax.wgsl (paths relative to shaders/); each file at most once
 *                            per shader, so includes may include what they need
 *   //#if NAME | //#if !NAME  keeps the lines up to //#else or //#endif when defines[NAME] is truthy (falsy)
 *   //#else, //#endif        nest freely; every //#if closes in the file that opened it
 *   $NAME                    replaced by defines[NAME] on kept lines; an undefined $NAME is an error
 *   //#slabs NAME            right after the declaration `@group(0) @binding(B) var<storage, ACCESS> NAME: array<T>;`
 *                            of a pool that may span several slabs (shaders/lib/slabs.ts): emits the declarations of
 *                            slabs 1.. (defines SLABS_NAME slabs of SLAB_BYTES_NAME bytes; one slab when undefined)
 *                            and fn NAMELoad(i: u32) -> T (+ fn NAMEStore(i: u32, v: T) when read_write), i the
 *                            element index over the whole pool
 * `enable f16;` is emitted first when defines.F16 is set. Any other `//#word` line is an error (a typo such as
 * `//#ifdef` must not pass as a comment), as are a missing include, //#else or //#endif without //#if, a second
 * //#else and an unclosed //#if. Errors name the file and line.
 */
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { SiftError } from '../../config/errors.js';
import { projectRoot } from '../../config/paths.js';
import { slabBinding } from './slabs.js';

export type Defines = Record<string, string | number | boolean>;

/** Source of shaders/<name>.wgsl, or undefined when there is no such file. */
export type ShaderSource = (name: string) => string | undefined;

/** Reads shaders/<name>.wgsl from the project. */
export const readShaderFile: ShaderSource = (name) => {
  const file = path.join(projectRoot(), 'shaders', `${name}.wgsl`);
  return existsSync(file) ? readFileSync(file, 'utf8') : undefined;
};

function fail(where: string, what: string): never {
  throw new SiftError('INTERNAL', `WGSL preprocessor: ${where}: ${what}`);
}

/** Preprocesses shader `name` (read through `read`, shaders/ by default) with `defines`. */
export function preprocessWgsl(name: string, defines: Defines = {}, read: ShaderSource = readShaderFile): string {
  const included = new Set<string>();
  const expand = (file: string, from: string): string[] => {
    if (included.has(file)) return [];
    included.add(file);
    const src = read(file);
    if (src === undefined) fail(from, `no shader source ${file}.wgsl`);
    const out: string[] = [];
    // One entry per open //#if: whether its current branch is kept, and whether //#else was seen.
    const stack: { keep: boolean; sawElse: boolean; line: number }[] = [];
    const active = () => stack.every((s) => s.keep);
    src.split('\n').forEach((line, i) => {
      const where = `${file}.wgsl:${i + 1}`;
      const t = line.trim();
      if (!t.startsWith('//#')) {
        if (active()) {
          out.push(
            line.replace(/\$([A-Z_][A-Z0-9_]*)/g, (_all, k: string) => {
              if (!(k in defines)) fail(where, `$${k} is not defined (defines: ${Object.keys(defines).join(', ')})`);
              return String(defines[k]);
            }),
          );
        }
        return;
      }
      let m: RegExpMatchArray | null;
      if ((m = t.match(/^\/\/#if\s+(!?)([A-Za-z_]\w*)$/))) {
        const v = Boolean(defines[m[2]]);
        stack.push({ keep: m[1] ? !v : v, sawElse: false, line: i + 1 });
      } else if (t === '//#else') {
        const top = stack[stack.length - 1];
        if (!top) fail(where, '//#else without //#if');
        if (top.sawElse) fail(where, `second //#else for the //#if of line ${top.line}`);
        top.keep = !top.keep;
        top.sawElse = true;
      } else if (t === '//#endif') {
        if (!stack.pop()) fail(where, '//#endif without //#if');
      } else if ((m = t.match(/^\/\/#include\s+([\w/]+)$/))) {
        if (active()) out.push(...expand(m[1], where));
      } else if ((m = t.match(/^\/\/#slabs\s+([A-Za-z_]\w*)$/))) {
        if (active()) out.push(...slabCode(m[1], out[out.length - 1] ?? '', defines, where));
      } else {
        fail(where, `unknown directive "${t}" (known: //#include, //#if, //#else, //#endif, //#slabs)`);
      }
    });
    const open = stack[stack.length - 1];
    if (open) fail(`${file}.wgsl:${open.line}`, '//#if without //#endif');
    return out;
  };
  const body = expand(name, 'shader').join('\n');
  return (defines.F16 ? 'enable f16;\n' : '') + body;
}

/** Bytes of a storage array's element type (the types pools are declared with). */
const ELEMENT_BYTES: Record<string, number> = {
  u32: 4,
  i32: 4,
  f32: 4,
  'vec2<u32>': 8,
  'vec2<i32>': 8,
  'vec2<f32>': 8,
  'vec4<u32>': 16,
  'vec4<i32>': 16,
  'vec4<f32>': 16,
};

/**
 * The code `//#slabs name` stands for, given the declaration line `decl` just before it: the declarations of slabs
 * 1.. and the load (and store) functions over the whole pool (see shaders/lib/slabs.ts).
 */
function slabCode(name: string, decl: string, defines: Defines, where: string): string[] {
  const re = new RegExp(
    `^\\s*@group\\(0\\)\\s*@binding\\((\\d+)\\)\\s*var<storage,\\s*(read|read_write)>\\s*${name}\\s*:\\s*array<([^;]+)>\\s*;`,
  );
  const m = decl.match(re);
  if (!m) fail(where, `//#slabs ${name} must follow the declaration of ${name} as a storage array`);
  const binding = Number(m[1]);
  const access = m[2];
  const type = m[3].replace(/\s+/g, '');
  const n = Number(defines[`SLABS_${name}`] ?? 1);
  if (!Number.isInteger(n) || n < 1) fail(where, `SLABS_${name} = ${defines[`SLABS_${name}`]}`);
  const out: string[] = [];
  if (n === 1) {
    out.push(`fn ${name}Load(i: u32) -> ${type} { return ${name}[i]; }`);
    if (access === 'read_write') out.push(`fn ${name}Store(i: u32, v: ${type}) { ${name}[i] = v; }`);
    return out;
  }
  const size = ELEMENT_BYTES[type];
  if (!size) fail(where, `//#slabs ${name}: element type ${type} (known: ${Object.keys(ELEMENT_BYTES).join(', ')})`);
  const bytes = Number(defines[`SLAB_BYTES_${name}`]);
  if (!Number.isInteger(bytes) || bytes < size || bytes % size !== 0) {
    fail(where, `SLAB_BYTES_${name} = ${defines[`SLAB_BYTES_${name}`]} is not a whole number of ${type}`);
  }
  const elems = bytes / size;
  const slab = (s: number) => (s === 0 ? name : `${name}_${s}`);
  for (let s = 1; s < n; s++) {
    out.push(`@group(0) @binding(${slabBinding(binding, s)}) var<storage, ${access}> ${slab(s)}: array<${type}>;`);
  }
  const cases = (body: (s: number) => string) => [
    ...Array.from({ length: n - 1 }, (_, k) => `    case ${k + 1}u: { ${body(k + 1)} }`),
    `    default: { ${body(0)} }`,
  ];
  out.push(
    `// Element i of the pool ${name}: ${n} slabs of ${elems} ${type}.`,
    `fn ${name}Load(i: u32) -> ${type} {`,
    `  let s = i / ${elems}u;`,
    `  let o = i - s * ${elems}u;`,
    `  var r: ${type};`,
    '  switch s {',
    ...cases((s) => `r = ${slab(s)}[o];`),
    '  }',
    '  return r;',
    '}',
  );
  if (access === 'read_write') {
    out.push(
      `fn ${name}Store(i: u32, v: ${type}) {`,
      `  let s = i / ${elems}u;`,
      `  let o = i - s * ${elems}u;`,
      '  switch s {',
      ...cases((s) => `${slab(s)}[o] = v;`),
      '  }',
      '}',
    );
  }
  return out;
}

/** Names of the `override` constants a WGSL module declares. */
export function overrideNames(code: string): string[] {
  return [...code.matchAll(/^\s*override\s+([A-Za-z_]\w*)/gm)].map((m) => m[1]);
}

/**
 * Throws unless every pipeline constant names an `override` the shader declares (WebGPU would otherwise reject the
 * pipeline with a validation error that surfaces later and elsewhere).
 */
export function checkOverrides(shader: string, code: string, constants: Record<string, number>): void {
  const declared = new Set(overrideNames(code));
  for (const [k, v] of Object.entries(constants)) {
    if (!declared.has(k)) {
      throw new SiftError(
        'INTERNAL',
        `${shader}.wgsl: pipeline constant ${k} names no override (declared: ${[...declared].join(', ') || 'none'})`,
      );
    }
    if (!Number.isFinite(v)) throw new SiftError('INTERNAL', `${shader}.wgsl: pipeline constant ${k} = ${v}`);
  }
}
