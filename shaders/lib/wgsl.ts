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
 * `enable f16;` is emitted first when defines.F16 is set. Any other `//#word` line is an error (a typo such as
 * `//#ifdef` must not pass as a comment), as are a missing include, //#else or //#endif without //#if, a second
 * //#else and an unclosed //#if. Errors name the file and line.
 */
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { SiftError } from '../../config/errors.js';
import { projectRoot } from '../../config/paths.js';

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
      } else {
        fail(where, `unknown directive "${t}" (known: //#include, //#if, //#else, //#endif)`);
      }
    });
    const open = stack[stack.length - 1];
    if (open) fail(`${file}.wgsl:${open.line}`, '//#if without //#endif');
    return out;
  };
  const body = expand(name, 'shader').join('\n');
  return (defines.F16 ? 'enable f16;\n' : '') + body;
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
