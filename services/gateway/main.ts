import { randomUUID } from 'node:crypto';
import { loadConfigOrExit } from '../../shared/config.js';
import { QueueName } from '../../shared/contracts.js';
import { Keys } from '../../shared/keys.js';
import { closeInOrder, exitOnStartupError, handleShutdown, once } from '../../shared/lifecycle.js';
import { createLogger } from '../../shared/logger.js';
import { ModelDirectory } from '../../shared/model-directory.js';
import { createQueue } from '../../shared/queues.js';
import { closeRedis, createRedis } from '../../shared/redis.js';
import { ResultWaiter } from './result-waiter.js';
import { buildServer } from './server.js';

/** The gateway role: the HTTP API in front of the pipeline. */
const config = loadConfigOrExit();
const log = createLogger('gateway', config.logLevel);
const gatewayId = randomUUID();
const keys = new Keys(config.redis.prefix);

try {
  const redis = createRedis(config.redis.url, `gateway:${gatewayId}`, 'client');
  const replies = createRedis(config.redis.url, `gateway-replies:${gatewayId}`, 'worker');
  const preQueue = createQueue(QueueName.pre, redis, keys.prefix);
  const waiter = new ResultWaiter(replies, keys.replies(gatewayId), log);
  waiter.start();
  const app = buildServer({
    config,
    gatewayId,
    keys,
    redis,
    preQueue,
    waiter,
    models: new ModelDirectory(redis, keys),
    log,
  });
  const address = await app.listen({ host: config.gateway.host, port: config.gateway.port });
  log.info({ address, gatewayId }, 'gateway listening');

  handleShutdown(
    log,
    once(() =>
      closeInOrder(log, [
        // close() stops accepting connections and waits for in-flight requests to answer.
        ['http', () => app.close()],
        ['waiter', () => waiter.close()],
        ['pre queue', () => preQueue.close()],
        ['redis', () => closeRedis(redis)],
      ]),
    ),
  );
} catch (err) {
  exitOnStartupError(log, err);
}
