import { setTimeout as sleep } from 'node:timers/promises';
import type { FastifyInstance, preHandlerHookHandler } from 'fastify';
import type { Redis } from 'ioredis';
import type { ModelCommand, ModelDescription } from '../../shared/contracts.js';
import { ErrorCode, PipelineError } from '../../shared/errors.js';
import type { Keys } from '../../shared/keys.js';
import { resolveModel, type ModelDirectory } from '../../shared/model-directory.js';
import { routeSchemas } from './openapi.js';

/**
 * Roboflow's model manager routes, within what the served models allow: `/model/registry`
 * lists the loaded models, `/model/add` loads a served model, `/model/remove` unloads one,
 * `/model/clear` unloads all but the pinned ones. `GET /models` lists every served model,
 * loaded or not. The gateway sends each command to the inference process on a pub/sub channel
 * and answers once the published model descriptions show the change.
 */
export interface ModelRoutesDeps {
  models: ModelDirectory;
  redis: Redis;
  keys: Keys;
  needsKey: { preHandler: preHandlerHookHandler };
  /** How long a command may take (loading a large model on a GPU takes a while). */
  timeoutMs: number;
}

const POLL_MS = 50;

export function registerModelRoutes(app: FastifyInstance, deps: ModelRoutesDeps): void {
  const { models, needsKey } = deps;
  const loaded = (all: Map<string, ModelDescription>) => ({
    models: [...all.values()].filter((m) => m.loaded).map(describe),
  });

  // Read from Redis on every call: the answer must show a load or unload that just happened.
  app.get('/model/registry', { schema: routeSchemas.registry, ...needsKey }, async () =>
    loaded(await models.fresh()),
  );

  app.get('/models', { schema: routeSchemas.models, ...needsKey }, async () => ({
    models: [...(await models.fresh()).values()].map((m) => ({
      ...describe(m),
      loaded: m.loaded,
      pinned: m.pinned,
      layout: m.layout,
      execution_provider: m.execution_provider,
      class_names: m.class_names,
    })),
  }));

  app.post('/model/add', { schema: routeSchemas.addModel, ...needsKey }, async (req) => {
    const modelId = modelIdOf(req.body);
    const model = resolveModel(modelId, await models.fresh());
    if (!model.loaded) {
      await command(deps, { op: 'add', modelId }, (all) => all.get(modelId)?.loaded === true);
    }
    return loaded(await models.fresh());
  });

  app.post('/model/remove', { schema: routeSchemas.removeModel, ...needsKey }, async (req) => {
    const modelId = modelIdOf(req.body);
    const model = resolveModel(modelId, await models.fresh());
    if (model.pinned) {
      throw new PipelineError(
        ErrorCode.MODEL_PINNED,
        `model '${modelId}' is pinned: it stays loaded`,
      );
    }
    if (model.loaded) {
      await command(deps, { op: 'remove', modelId }, (all) => all.get(modelId)?.loaded === false);
    }
    return loaded(await models.fresh());
  });

  app.post('/model/clear', { schema: routeSchemas.clearModels, ...needsKey }, async () => {
    await command(deps, { op: 'clear' }, (all) =>
      [...all.values()].every((m) => m.pinned || !m.loaded),
    );
    return loaded(await models.fresh());
  });
}

/** Roboflow's ModelDescriptionEntity. */
export function describe(m: ModelDescription) {
  return {
    model_id: m.model_id,
    task_type: m.task_type,
    batch_size: m.batch_size,
    input_height: m.input_height,
    input_width: m.input_width,
  };
}

function modelIdOf(body: unknown): string {
  const modelId = (body as { model_id?: unknown } | undefined)?.model_id;
  if (typeof modelId !== 'string' || modelId === '') {
    throw new PipelineError(ErrorCode.INVALID_REQUEST, 'model_id: a string is required');
  }
  return modelId;
}

/** Sends a command to the inference process and waits until the descriptions show it done. */
async function command(
  deps: ModelRoutesDeps,
  cmd: ModelCommand,
  done: (all: Map<string, ModelDescription>) => boolean,
): Promise<void> {
  const receivers = await deps.redis.publish(deps.keys.modelControl(), JSON.stringify(cmd));
  if (receivers === 0) {
    throw new PipelineError(ErrorCode.NOT_READY, 'no inference process is listening');
  }
  const deadline = Date.now() + deps.timeoutMs;
  while (Date.now() < deadline) {
    if (done(await deps.models.fresh())) return;
    await sleep(POLL_MS);
  }
  throw new PipelineError(
    ErrorCode.DEADLINE_EXCEEDED,
    `the inference process did not finish '${cmd.op}' within ${deps.timeoutMs} ms (see its log)`,
  );
}
