/**
 * Server-sent events framed as OpenAI does: `data: {json}\n\n` per chunk, `data: [DONE]\n\n` at the end, and
 * `: keep-alive\n\n` comments whenever nothing was written for keepAliveMs (a long queue wait or prefill), so
 * proxies and clients do not time the connection out.
 */
import type { ServerResponse } from 'node:http';

export class SseWriter {
  private lastWrite = performance.now();
  private timer: NodeJS.Timeout | null = null;
  private closed = false;

  constructor(
    private readonly res: ServerResponse,
    private readonly keepAliveMs: number,
  ) {}

  /** Sends the status line and headers (plus `headers`, e.g. x-request-id) and starts the keep-alive timer. */
  open(headers: Record<string, string>): void {
    this.res.writeHead(200, {
      ...headers,
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-cache',
      connection: 'keep-alive',
      'x-accel-buffering': 'no',
    });
    this.res.flushHeaders();
    this.timer = setInterval(() => this.keepAlive(), Math.max(1, Math.floor(this.keepAliveMs / 2)));
    this.timer.unref();
  }

  /** Writes a keep-alive comment if the stream has been idle for keepAliveMs. */
  keepAlive(): void {
    if (performance.now() - this.lastWrite >= this.keepAliveMs) this.write(': keep-alive\n\n');
  }

  data(obj: unknown): void {
    this.write(`data: ${JSON.stringify(obj)}\n\n`);
  }

  /** Ends the stream with `data: [DONE]`. */
  done(): void {
    this.write('data: [DONE]\n\n');
    this.close();
  }

  close(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    if (!this.closed) {
      this.closed = true;
      if (!this.res.destroyed) this.res.end();
    }
  }

  private write(s: string): void {
    if (this.closed || this.res.destroyed) return;
    this.lastWrite = performance.now();
    this.res.write(s);
  }
}
