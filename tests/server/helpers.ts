/**
 * Shared pieces of the server tests: a small text side written by the test helpers (no model download), app
 * construction, SSE parsing.
 */
import type { TestContext } from 'node:test';
import type { FastifyInstance } from 'fastify';
import { type ServerConfig, serverConfig } from '../../config/server.js';
import type { EngineClient } from '../../engine/client.js';
import { buildApp } from '../../server/app.js';
import type { TextSide } from '../../text/text.js';
import { storyText } from '../helpers/tiny-text.js';

/** The text side the fake engine's tests use: the story vocab of tests/helpers/tiny-text.ts. */
export async function testText(): Promise<TextSide> {
  return storyText();
}

/** Server config from defaults plus `flags` (as the CLI would give them). */
export function cfg(flags: Partial<Record<keyof ServerConfig, unknown>> = {}): ServerConfig {
  return serverConfig({ flags });
}

export async function testApp(
  t: TestContext,
  engine: EngineClient | null,
  opts: { config?: ServerConfig; text?: TextSide | null } = {},
): Promise<FastifyInstance> {
  const app = await buildApp({
    engine,
    text: opts.text === undefined ? await testText() : opts.text,
    config: opts.config ?? cfg(),
  });
  t.after(() => app.close());
  return app;
}

export interface SseParse {
  /** Parsed JSON of every `data:` line except [DONE], in order. */
  events: Array<Record<string, unknown>>;
  /** Whether the stream ended with `data: [DONE]\n\n`. */
  done: boolean;
  /** Number of `: keep-alive` comments. */
  comments: number;
}

/** Parses an SSE body strictly: every event is one `data: ...` or `: comment` line followed by a blank line. */
export function parseSse(body: string): SseParse {
  const out: SseParse = { events: [], done: false, comments: 0 };
  if (!body.endsWith('\n\n'))
    throw new Error(`SSE body does not end with a blank line: ${JSON.stringify(body.slice(-40))}`);
  const blocks = body.slice(0, -2).split('\n\n');
  blocks.forEach((b, i) => {
    if (b.includes('\n')) throw new Error(`SSE event ${i} spans several lines: ${JSON.stringify(b)}`);
    if (b.startsWith(': ')) {
      out.comments++;
      return;
    }
    if (!b.startsWith('data: ')) throw new Error(`SSE event ${i} is not a data line: ${JSON.stringify(b)}`);
    if (out.done) throw new Error('data after [DONE]');
    const payload = b.slice(6);
    if (payload === '[DONE]') out.done = true;
    else out.events.push(JSON.parse(payload));
  });
  return out;
}

/** Concatenated delta text per choice index of a chat or completions stream. */
export function streamedText(events: SseParse['events']): Map<number, string> {
  const m = new Map<number, string>();
  for (const e of events) {
    for (const c of (e.choices as Array<Record<string, unknown>>) ?? []) {
      const idx = c.index as number;
      const piece = ((c.delta as { content?: string } | undefined)?.content ?? (c.text as string | undefined)) || '';
      m.set(idx, (m.get(idx) ?? '') + piece);
    }
  }
  return m;
}

export interface ChunkView {
  choices: Array<{ index: number; finish_reason: string | null; text?: string; delta?: { content?: string } }>;
  usage?: { prompt_tokens: number; completion_tokens: number } | null;
}

/** The last data event of a stream (fails the test when there is none). */
export function lastEvent(s: SseParse): ChunkView {
  const e = s.events.at(-1);
  if (!e) throw new Error('the stream has no data events');
  return e as unknown as ChunkView;
}
