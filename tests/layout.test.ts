/**
 * The layout holds: every import between top-level folders is an edge the README's ```layout block allows
 * (`folder/ ... -> a b c`; `x (types)` allows type-only imports of x), and every source folder is in the block.
 * Reads the TypeScript sources and the README; no build output, no GPU.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
/** Folders whose imports are not constrained (the test suites mirror every folder). */
const UNCONSTRAINED = new Set(['tests']);

interface Rule {
  any: Set<string>;
  typesOnly: Set<string>;
}

/** The allowed edges of the README's layout block: folder -> {any, typesOnly}. */
function layoutRules(readme: string): Map<string, Rule> {
  const m = /```layout\n([\s\S]*?)```/.exec(readme);
  assert.ok(m, 'README.md has a ```layout block');
  const rules = new Map<string, Rule>();
  let current: Rule | null = null;
  for (const line of m[1].split('\n')) {
    const folder = /^([a-z][a-z0-9-]*)\/\s/.exec(line);
    if (folder) {
      current = { any: new Set(), typesOnly: new Set() };
      rules.set(folder[1], current);
      continue;
    }
    const edges = /^\s+->\s*(.*)$/.exec(line);
    if (edges && current) {
      const words = edges[1].trim().split(/\s+/);
      for (let i = 0; i < words.length; i++) {
        if (words[i + 1] === '(types)') {
          current.typesOnly.add(words[i]);
          i++;
        } else if (words[i]) current.any.add(words[i]);
      }
    }
  }
  return rules;
}

function tsFiles(dir: string): string[] {
  const out: string[] = [];
  for (const f of readdirSync(dir)) {
    const p = path.join(dir, f);
    if (statSync(p).isDirectory()) out.push(...tsFiles(p));
    else if (f.endsWith('.ts') && !f.endsWith('.d.ts')) out.push(p);
  }
  return out;
}

interface Import {
  spec: string;
  typeOnly: boolean;
}

/** Static imports / re-exports and dynamic import() of a source file, with whether each is type-only. */
export function importsOf(src: string): Import[] {
  const out: Import[] = [];
  const stmt = /^\s*(import|export)\s+(type\s+)?([^'";]*?)\s*from\s*['"]([^'"]+)['"]/gm;
  for (const m of src.matchAll(stmt)) {
    const names = m[3];
    const braces = /\{([\s\S]*)\}/.exec(names);
    // `import { type A, type B } from` is type-only too; a default or namespace import is not
    const allTyped =
      braces !== null &&
      names.replace(braces[0], '').replace(/,/g, '').trim() === '' &&
      braces[1]
        .split(',')
        .map((s) => s.trim())
        .filter(Boolean)
        .every((s) => s.startsWith('type '));
    out.push({ spec: m[4], typeOnly: m[2] !== undefined || allTyped });
  }
  for (const m of src.matchAll(/^\s*import\s+['"]([^'"]+)['"]/gm)) out.push({ spec: m[1], typeOnly: false });
  for (const m of src.matchAll(/\bimport\(\s*['"]([^'"]+)['"]\s*\)/g)) out.push({ spec: m[1], typeOnly: false });
  return out;
}

test('the import parser sees static, re-exported, side-effect and dynamic imports and type-only ones', () => {
  const src = [
    "import { a } from '../engine/x.js';",
    "import type { B } from '../model/y.js';",
    "import { type C, type D } from '../model/z.js';",
    "import { type E, f } from '../model/w.js';",
    "export { g } from './local.js';",
    "export type { H } from '../kvcache/t.js';",
    "import '../shaders/side.js';",
    "const m = await import('../server/late.js');",
    "import {\n  x,\n  type Y,\n} from '../util/multi.js';",
  ].join('\n');
  assert.deepEqual(importsOf(src), [
    { spec: '../engine/x.js', typeOnly: false },
    { spec: '../model/y.js', typeOnly: true },
    { spec: '../model/z.js', typeOnly: true },
    { spec: '../model/w.js', typeOnly: false },
    { spec: './local.js', typeOnly: false },
    { spec: '../kvcache/t.js', typeOnly: true },
    { spec: '../util/multi.js', typeOnly: false },
    { spec: '../shaders/side.js', typeOnly: false },
    { spec: '../server/late.js', typeOnly: false },
  ]);
});

test("every import between top-level folders is an edge the README's layout allows", () => {
  const rules = layoutRules(readFileSync(path.join(root, 'README.md'), 'utf8'));
  assert.ok(rules.size >= 10, `the layout block names ${rules.size} folders`);
  const tsconfig = JSON.parse(readFileSync(path.join(root, 'tsconfig.json'), 'utf8')) as { include: string[] };
  const bad: string[] = [];
  for (const folder of tsconfig.include) {
    assert.ok(rules.has(folder), `source folder ${folder}/ is missing from the README's layout block`);
    if (UNCONSTRAINED.has(folder)) continue;
    const rule = rules.get(folder) as Rule;
    for (const file of tsFiles(path.join(root, folder))) {
      for (const imp of importsOf(readFileSync(file, 'utf8'))) {
        if (!imp.spec.startsWith('.')) continue; // node builtins and packages
        const target = path.relative(root, path.resolve(path.dirname(file), imp.spec)).split(path.sep)[0];
        if (target === folder) continue;
        const ok = rule.any.has(target) || (imp.typeOnly && rule.typesOnly.has(target));
        if (!ok) {
          const how = rule.typesOnly.has(target) ? ' (only type imports allowed)' : '';
          bad.push(`${path.relative(root, file)} -> ${target}/ ('${imp.spec}')${how}`);
        }
      }
    }
  }
  assert.deepEqual(bad, [], `imports the layout does not allow:\n${bad.join('\n')}`);
});
