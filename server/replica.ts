/**
 * What a load balancer in front of several replicas needs from one: every response names the replica that
 * answered (X-Sift-Replica, from --replica-id or the hostname), and the session key a client sends (X-Session-Id)
 * is checked, echoed and logged with the request, so one conversation can be followed across the fleet.
 *
 * The session key is what the balancer hashes to keep a conversation on the replica that holds its prefix pages
 * (deploy/nginx/sift.conf); sift itself needs nothing from it to serve the request: its prefix cache works on the
 * prompt's tokens.
 */
import type { FastifyInstance } from 'fastify';
import { SiftError } from '../config/errors.js';
import { definePlugin } from './plugin.js';

/** Response header naming the replica that answered. */
export const REPLICA_HEADER = 'x-sift-replica';
/** Request header carrying the routing key of a conversation (echoed on the response). */
export const SESSION_HEADER = 'x-session-id';

/** Visible ASCII and spaces, 1-256 characters: ids, emails, UUIDs, hashes all fit. */
const SESSION_ID = /^[\x20-\x7e]{1,256}$/;

export interface ReplicaOptions extends Record<string, unknown> {
  /** This replica's id (config/server.ts replicaIdOf). */
  replicaId: string;
}

async function replicaPlugin(app: FastifyInstance, opts: ReplicaOptions): Promise<void> {
  const id = opts.replicaId;
  app.addHook('onRequest', async (request, reply) => {
    // Set before anything can fail, so errors (401, 404, 503 while loading) name the replica too; streamed
    // responses copy the reply's headers when they open the stream.
    reply.header(REPLICA_HEADER, id);
    const h = request.headers[SESSION_HEADER];
    if (h === undefined) return;
    // Node joins repeated headers with ", " (a string); the type also allows an array.
    const session = Array.isArray(h) ? h.join(', ') : h;
    if (!SESSION_ID.test(session)) {
      throw new SiftError(
        'INVALID_ARGUMENT',
        `X-Session-Id must be 1-256 printable ASCII characters (got ${session.length} characters)`,
        { param: 'X-Session-Id' },
      );
    }
    reply.header(SESSION_HEADER, session);
    request.log = request.log.child({ session });
  });
}

export default definePlugin(replicaPlugin, { name: 'sift-replica', dependencies: ['sift-errors'] });
