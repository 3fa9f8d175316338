/**
 * The sessions scenarios: multi-turn conversations, the traffic a balancer's session affinity is for.
 *
 * A level keeps `conversations` conversations going (default twice the concurrency). Each request picks one of
 * the conversations not in flight at random (seeded) and sends its next turn: the conversation so far, ending
 * with a new user message. So a conversation never has two turns in flight, and its turns are sent by whichever
 * stream is free at the time, with other conversations' turns in between, at no fixed rhythm: as users who read
 * and type between turns would send them. A conversation that has had `turns` turns is replaced by a new one.
 * (A conversation pinned to one closed-loop stream, or conversations served in a fixed rotation, would make
 * least_conn send its turns back to the replica that answered the last one: an affinity real traffic does not
 * have, which would hide what the session key is for.)
 *
 * 'sessions' sends an X-Session-Id header naming the conversation (what deploy/nginx/sift.conf routes on);
 * 'sessions-nokey' sends the same requests without it.
 */
import type { RequestSpec } from './sse-client.js';
import { pathOf, rng, storyWords, type WorkloadOptions } from './workload.js';

/** The assistant's turn between two user messages (always the same: the requests do not depend on what the
 *  server answered, and turn t+1's prompt begins with turn t's). */
export const SESSION_REPLY = 'That is a lovely story. What happened next?';

/** Request header carrying a conversation's routing key. */
export const SESSION_HEADER = 'x-session-id';

/**
 * Turn `turn` (0-based) of conversation `conversation` (a seed): turn + 1 user messages of about o.turnTokens
 * tokens each, the fixed reply between them; the first message starts with the conversation's number, so no two
 * conversations share a prefix beyond the chat template's.
 */
export function sessionRequest(o: WorkloadOptions, conversation: number, turn: number, keyed: boolean): RequestSpec {
  const words = Math.max(3, Math.round(o.turnTokens / o.calibration.perWord));
  const users = Array.from({ length: turn + 1 }, (_, k) =>
    k === 0
      ? `Conversation ${conversation}: ${storyWords(Math.max(1, words - 2), conversation * 64 + k)}`
      : storyWords(words, conversation * 64 + k),
  );
  const b: Record<string, unknown> = {
    model: o.model,
    max_tokens: o.maxTokens,
    stream: true,
    stream_options: { include_usage: true },
  };
  if (o.api === 'chat') {
    b.messages = users.flatMap((content, k) => [
      ...(k > 0 ? [{ role: 'assistant', content: SESSION_REPLY }] : []),
      { role: 'user', content },
    ]);
  } else {
    b.prompt = users.join(`\n${SESSION_REPLY}\n`);
  }
  if (o.attention) b.attention = { mode: o.attention };
  return {
    path: pathOf(o.api),
    body: b,
    api: o.api,
    expectUsage: true,
    kind: `turn ${turn + 1}`,
    promptLen: null,
    conversation: { id: conversation, turn },
    ...(keyed ? { headers: { [SESSION_HEADER]: `conversation-${conversation}` } } : {}),
  };
}

interface Idle {
  conversation: number;
  turn: number;
}

/** The conversations of one level: next() gives the next request, done() is told when it ended. */
export class SessionPool {
  /** Conversations waiting for their next turn. */
  private readonly idle: Idle[] = [];
  private nextConversation: number;
  private readonly random: () => number;

  constructor(
    private readonly o: WorkloadOptions,
    private readonly keyed: boolean,
    /** First conversation number (distinct per level, so levels never share a conversation). */
    seedBase: number,
  ) {
    this.nextConversation = seedBase;
    this.random = rng(seedBase);
    for (let i = 0; i < Math.max(1, o.conversations); i++)
      this.idle.push({ conversation: this.nextConversation++, turn: 0 });
  }

  /** The next turn of a conversation not in flight, picked at random (a fresh one if every one is in flight). */
  next(): RequestSpec {
    const i = Math.floor(this.random() * this.idle.length);
    const c = this.idle.splice(i, 1)[0] ?? { conversation: this.nextConversation++, turn: 0 };
    return sessionRequest(this.o, c.conversation, c.turn, this.keyed);
  }

  /** The request `spec` ended (either way): its conversation waits for its next turn, or a new one starts. */
  done(spec: RequestSpec): void {
    const c = spec.conversation;
    if (!c) return;
    this.idle.push(
      c.turn + 1 < this.o.turns
        ? { conversation: c.id, turn: c.turn + 1 }
        : { conversation: this.nextConversation++, turn: 0 },
    );
  }
}
