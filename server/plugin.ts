/**
 * Plugin metadata without the fastify-plugin package: fastify reads the same well-known symbols. `name` is
 * registered so later plugins can list it in `dependencies` (checked at register time); a plugin that
 * decorates or adds hooks for the whole app is not encapsulated (skip-override).
 */
import type { FastifyPluginAsync } from 'fastify';

export interface PluginMeta {
  name: string;
  dependencies?: string[];
  /** false (default) = hooks, handlers and decorators apply to the parent instance. */
  encapsulate?: boolean;
}

export function definePlugin<O extends Record<string, unknown>>(
  fn: FastifyPluginAsync<O>,
  meta: PluginMeta,
): FastifyPluginAsync<O> {
  const f = fn as FastifyPluginAsync<O> & Record<symbol, unknown>;
  f[Symbol.for('plugin-meta')] = { name: meta.name, dependencies: meta.dependencies ?? [] };
  f[Symbol.for('fastify.display-name')] = meta.name;
  if (!meta.encapsulate) f[Symbol.for('skip-override')] = true;
  return f;
}
