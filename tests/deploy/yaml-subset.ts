/**
 * A parser for the subset of YAML that deploy/kubernetes/ is written in, so the manifests can be checked without
 * a YAML package: documents separated by `---`; block mappings and block sequences by indentation (a sequence may
 * sit at its key's indentation, as kubectl writes it); `- key: value` items; plain, 'single'- and
 * "double"-quoted scalars on one line; `|` literal block scalars; `#` comments. Plain scalars become numbers,
 * booleans and null as YAML 1.2's core schema says. Anything else (flow collections, anchors, aliases, tags,
 * folded or multi-line plain scalars, tabs) is an error naming the line, so the manifests stay inside the subset.
 */

export type YamlValue = string | number | boolean | null | YamlValue[] | { [key: string]: YamlValue };

interface Line {
  /** 1-based line number in the file. */
  n: number;
  indent: number;
  /** Content after the indentation, comment removed, trailing spaces trimmed. */
  text: string;
}

class YamlSubsetError extends Error {}

const fail = (n: number, why: string): never => {
  throw new YamlSubsetError(`line ${n}: ${why}`);
};

/** The line without its comment (a # at the start or after a space, outside quotes). */
function stripComment(s: string, n: number): string {
  let quote: string | null = null;
  for (let i = 0; i < s.length; i++) {
    const c = s[i];
    if (quote) {
      if (c === quote) quote = null;
      continue;
    }
    if (c === '"' || c === "'") {
      if (i === 0 || /[\s:[-]/.test(s[i - 1])) quote = c;
    } else if (c === '#' && (i === 0 || s[i - 1] === ' ')) return s.slice(0, i);
  }
  if (quote) fail(n, 'unterminated quoted scalar');
  return s;
}

function scalar(raw: string, n: number): YamlValue {
  const s = raw.trim();
  if (s === '') return null;
  if (s.startsWith('"')) {
    if (!s.endsWith('"') || s.length < 2) fail(n, `bad double-quoted scalar ${s}`);
    try {
      return JSON.parse(s) as string;
    } catch {
      return fail(n, `escape sequences outside JSON's in ${s}`);
    }
  }
  if (s.startsWith("'")) {
    if (!s.endsWith("'") || s.length < 2) fail(n, `bad single-quoted scalar ${s}`);
    return s.slice(1, -1).replace(/''/g, "'");
  }
  if (/^[[{&*!>%@`]/.test(s)) fail(n, `outside the subset (flow collection, anchor, alias, tag or folded): ${s}`);
  if (s === 'null' || s === '~') return null;
  if (s === 'true') return true;
  if (s === 'false') return false;
  if (/^[-+]?[0-9]+$/.test(s)) return Number.parseInt(s, 10);
  if (/^[-+]?([0-9]+\.[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?$/.test(s)) return Number(s);
  return s;
}

/** `key: rest` of a mapping line, or null when the line is not one. */
function keyOf(text: string, n: number): { key: string; rest: string } | null {
  let key: string;
  let rest: string;
  if (text.startsWith('"') || text.startsWith("'")) {
    const end = text.indexOf(text[0], 1);
    if (end < 0 || text[end + 1] !== ':') return null;
    key = scalar(text.slice(0, end + 1), n) as string;
    rest = text.slice(end + 2);
  } else {
    const m = /^([^\s:#'"][^:#]*?):(?:\s|$)/.exec(text);
    if (!m) return null;
    key = m[1];
    rest = text.slice(m[1].length + 1);
  }
  if (rest !== '' && !rest.startsWith(' ')) return null;
  return { key, rest: rest.trim() };
}

class Parser {
  private i = 0;
  constructor(private readonly lines: Line[]) {}

  get done(): boolean {
    return this.peek() === undefined;
  }

  /** The next non-blank line (blank lines matter only inside block scalars). */
  private peek(): Line | undefined {
    while (this.i < this.lines.length && this.lines[this.i].text === '') this.i++;
    return this.lines[this.i];
  }

  /** The block (mapping or sequence) whose lines start at exactly `indent`. */
  block(indent: number): YamlValue {
    const first = this.peek();
    if (!first) return null;
    if (first.indent !== indent) fail(first.n, `expected indentation ${indent}, found ${first.indent}`);
    return first.text === '-' || first.text.startsWith('- ') ? this.sequence(indent) : this.mapping(indent);
  }

  private sequence(indent: number): YamlValue[] {
    const out: YamlValue[] = [];
    for (
      let l = this.peek();
      l && l.indent === indent && (l.text === '-' || l.text.startsWith('- '));
      l = this.peek()
    ) {
      this.i++;
      const rest = l.text.slice(1).trimStart();
      if (rest === '') {
        const next = this.peek();
        out.push(next && next.indent > indent ? this.block(next.indent) : null);
      } else if (keyOf(rest, l.n)) {
        // "- key: value": a mapping whose first entry shares the dash's line; the others align with it.
        const inner = indent + (l.text.length - rest.length);
        this.lines[--this.i] = { n: l.n, indent: inner, text: rest };
        out.push(this.mapping(inner));
      } else {
        out.push(this.value(rest, l, indent));
      }
    }
    const l = this.peek();
    if (l && l.indent > indent) fail(l.n, 'unexpected indentation after a sequence item');
    return out;
  }

  private mapping(indent: number): { [key: string]: YamlValue } {
    const out: { [key: string]: YamlValue } = {};
    for (let l = this.peek(); l && l.indent === indent; l = this.peek()) {
      if (l.text.startsWith('- ') || l.text === '-') fail(l.n, 'a sequence item where a mapping key was expected');
      const kv = keyOf(l.text, l.n);
      if (!kv) return fail(l.n, `not a "key: value" line: ${l.text}`);
      if (kv.key in out) fail(l.n, `duplicate key ${kv.key}`);
      this.i++;
      if (kv.rest === '') {
        const next = this.peek();
        if (next && next.indent > indent) out[kv.key] = this.block(next.indent);
        else if (next && next.indent === indent && (next.text.startsWith('- ') || next.text === '-'))
          out[kv.key] = this.sequence(indent);
        else out[kv.key] = null;
      } else {
        out[kv.key] = this.value(kv.rest, l, indent);
      }
    }
    const l = this.peek();
    if (l && l.indent > indent) fail(l.n, `unexpected indentation ${l.indent} (a multi-line plain scalar?)`);
    return out;
  }

  /** A value on its key's (or dash's) line: a scalar, or a `|` block scalar on the lines below. */
  private value(rest: string, l: Line, indent: number): YamlValue {
    if (rest === '|' || rest === '|-') {
      const body: string[] = [];
      let blockIndent = -1;
      for (let b = this.lines[this.i]; b && (b.indent > indent || b.text === ''); b = this.lines[++this.i]) {
        if (blockIndent < 0 && b.text !== '') blockIndent = b.indent;
        body.push(b.text === '' ? '' : `${' '.repeat(b.indent - blockIndent)}${b.text}`);
      }
      while (body.length && body[body.length - 1] === '') body.pop();
      const text = body.join('\n');
      return rest === '|' ? `${text}\n` : text;
    }
    return scalar(rest, l.n);
  }
}

/** Parses every document of a file in the subset. */
export function parseYamlDocuments(source: string): YamlValue[] {
  const docs: Line[][] = [[]];
  source.split('\n').forEach((raw, k) => {
    const n = k + 1;
    if (/^\t| \t/.test(raw.match(/^\s*/)?.[0] ?? '')) fail(n, 'tabs in indentation');
    if (/^---\s*$/.test(raw)) {
      docs.push([]);
      return;
    }
    if (/^\.\.\.\s*$/.test(raw) || /^%/.test(raw))
      fail(n, 'directives and document end markers are outside the subset');
    const text = stripComment(raw, n).trimEnd();
    const indent = text.length - text.trimStart().length;
    docs[docs.length - 1].push({ n, indent, text: text.trimStart() });
  });
  const out: YamlValue[] = [];
  for (const lines of docs) {
    const first = lines.find((l) => l.text !== '');
    if (!first) continue;
    const p = new Parser(lines);
    const v = p.block(0);
    if (!p.done) fail(first.n, 'content after the document');
    out.push(v);
  }
  return out;
}
