import { randomUUID } from 'node:crypto';
import type { FastifyInstance } from 'fastify';
import type { Redis } from 'ioredis';
import type { Keys } from '../../shared/keys.js';
import { z } from 'zod';
import { errorResponses, openApiSchema } from './openapi.js';
import { SERVER_NAME, SERVER_VERSION } from './version.js';

/**
 * `GET /info`, as Roboflow's server answers it (its `ServerVersionInfo`), which inference-sdk's
 * `get_server_info()` reads: the server's name, version and a stable id.
 */

/** The body of `GET /info`: Roboflow's ServerVersionInfo. */
export const ServerInfoSchema = z.object({
  name: z.string(),
  version: z.string(),
  uuid: z.uuid().describe('Stable id of the stack: the same from every gateway sharing its Redis.'),
});
export type ServerInfo = z.infer<typeof ServerInfoSchema>;

const infoRouteSchema = {
  summary: "The server's name, version and id (Roboflow's ServerVersionInfo)",
  response: { 200: openApiSchema(ServerInfoSchema), ...errorResponses(503) },
};

export interface ServerInfoDeps {
  redis: Redis;
  keys: Keys;
}

/**
 * Registers `GET /info`: `{"name", "version", "uuid"}`. The uuid identifies the stack, not
 * the gateway process: the first `/info` of any gateway of the stack stores a random UUID under
 * `<prefix>:server-id` (no TTL) and every gateway answers that one, so all gateways behind one
 * address agree, and it lasts as long as the stack's Redis keeps its data.
 */
export function registerServerInfo(app: FastifyInstance, deps: ServerInfoDeps): void {
  let uuid: string | undefined;
  app.get('/info', { schema: infoRouteSchema }, async (): Promise<ServerInfo> => {
    uuid ??= await stackId(deps);
    return { name: SERVER_NAME, version: SERVER_VERSION, uuid };
  });
}

/** The stack's id, created by whichever gateway asks first. */
async function stackId({ redis, keys }: ServerInfoDeps): Promise<string> {
  await redis.set(keys.serverId(), randomUUID(), 'NX');
  const id = await redis.get(keys.serverId());
  if (id === null) throw new Error('the server id vanished from Redis as it was written');
  return id;
}
