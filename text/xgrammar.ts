/**
 * Loads @mlc-ai/web-xgrammar (the grammar engine of web-llm: JSON schema / EBNF -> a pushdown automaton over the
 * vocabulary, with per-step token bitmasks) in Node. Its lib/index.js is a UMD bundle with the wasm inlined, in a
 * package marked "type": "module", so Node's ESM loader cannot run it (it reads `require` and `__filename`).
 * It is evaluated here as the CommonJS module it is written as, with its one `import('module')` (emscripten's
 * Node branch) answered by require. Loaded once, on first use.
 */
import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import vm from 'node:vm';
import { SiftError } from '../config/errors.js';

/** The parts of web-xgrammar's API sift uses (lib/xgrammar.d.ts). */
export interface XgTokenizerInfo {
  getVocabSize(): number;
  dispose(): void;
}
export interface XgCompiledGrammar {
  dispose(): void;
}
export interface XgGrammarCompiler {
  compileJSONSchema(
    schema: string,
    anyWhitespace?: boolean,
    indent?: number,
    separators?: [string, string],
    strictMode?: boolean,
    maxWhitespaceCnt?: number,
  ): Promise<XgCompiledGrammar>;
  dispose(): void;
}
export interface XgGrammarMatcher {
  acceptToken(id: number): boolean;
  getNextTokenBitmask(): Promise<Int32Array>;
  isTerminated(): boolean;
  findJumpForwardString(): string;
  rollBack(numTokens: number): void;
  dispose(): void;
}
export interface Xgrammar {
  TokenizerInfo: {
    createTokenizerInfo(
      encodedVocab: string[],
      vocabType?: string,
      prependSpaceInTokenization?: boolean,
      vocabSize?: number,
      stopTokenIds?: number[] | number,
    ): Promise<XgTokenizerInfo>;
  };
  GrammarCompiler: { createGrammarCompiler(info: XgTokenizerInfo, cacheEnabled?: boolean): Promise<XgGrammarCompiler> };
  GrammarMatcher: {
    createGrammarMatcher(
      grammar: XgCompiledGrammar,
      overrideStopTokens?: number[] | number,
      terminateWithoutStopToken?: boolean,
    ): Promise<XgGrammarMatcher>;
  };
}

let loaded: Xgrammar | null = null;

export function xgrammar(): Xgrammar {
  if (loaded) return loaded;
  const require = createRequire(import.meta.url);
  const file = require.resolve('@mlc-ai/web-xgrammar');
  let src = fs.readFileSync(file, 'utf8');
  const dynamicImport = "await import('module')";
  if (!src.includes(dynamicImport)) {
    throw new SiftError('INTERNAL', `${file}: not the web-xgrammar build sift knows (no ${dynamicImport})`);
  }
  src = src.replace(dynamicImport, "require('module')");
  const fn = vm.compileFunction(src, ['exports', 'require', 'module', '__filename', '__dirname'], { filename: file });
  const mod = { exports: {} as Record<string, unknown> };
  fn.call(mod.exports, mod.exports, createRequire(file), mod, file, path.dirname(file));
  loaded = mod.exports as unknown as Xgrammar;
  return loaded;
}
