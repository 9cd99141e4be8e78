import { setTimeout as sleep } from 'node:timers/promises';
import type { FastifyInstance, preHandlerHookHandler } from 'fastify';
import type { Redis } from 'ioredis';
import { z } from 'zod';
import {
  ModelDescriptionSchema,
  type ModelCommand,
  type ModelDescription,
} from '../../shared/contracts.js';
import { ErrorCode, PipelineError } from '../../shared/errors.js';
import type { Keys } from '../../shared/keys.js';
import { resolveModel, type ModelDirectory } from '../../shared/model-directory.js';
import { errorResponses, openApiSchema } from './openapi.js';
import { invalidRequest } from './request.js';

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

/** Roboflow's ModelDescriptionEntity: one loaded model in the model manager's answers. */
export const ModelEntrySchema = ModelDescriptionSchema.pick({
  model_id: true,
  task_type: true,
  batch_size: true,
  input_height: true,
  input_width: true,
});
export type ModelEntry = z.infer<typeof ModelEntrySchema>;

/** Roboflow's ModelsDescriptions: the answer of the model manager routes. */
export const ModelListSchema = z.object({ models: z.array(ModelEntrySchema) });
export type ModelList = z.infer<typeof ModelListSchema>;

/** One served model in `GET /models`: the entry, with its state, classes and layout. */
export const ServedModelSchema = ModelEntrySchema.extend(
  ModelDescriptionSchema.pick({
    loaded: true,
    pinned: true,
    layout: true,
    execution_provider: true,
    class_names: true,
  }).shape,
);
const ServedModelsSchema = z.object({ models: z.array(ServedModelSchema) });
export type ServedModels = z.infer<typeof ServedModelsSchema>;

/** The body of `/model/add` and `/model/remove` (Roboflow's AddModelRequest). */
export const ModelIdBodySchema = z.looseObject({
  model_id: z.string({ error: 'a string is required' }).min(1, 'a string is required'),
  api_key: z.string().optional(),
});

const listResponse = (...errors: number[]) => ({
  200: openApiSchema(ModelListSchema),
  ...errorResponses(...errors),
});

/** Route schemas (documentation, see openapi.ts), by route. */
const routeSchemas = {
  registry: {
    summary: 'Loaded models (Roboflow model registry)',
    response: listResponse(),
  },
  models: {
    summary: 'Every model this stack serves, loaded or not, with its classes and layout',
    response: { 200: openApiSchema(ServedModelsSchema) },
  },
  addModel: {
    summary: 'Load a served model now (inference-sdk calls this before inferring)',
    body: openApiSchema(ModelIdBodySchema, 'input'),
    response: listResponse(400, 404, 503, 504),
  },
  removeModel: {
    summary: 'Unload a model; it loads again on its next request',
    body: openApiSchema(ModelIdBodySchema, 'input'),
    response: listResponse(400, 404, 409, 503, 504),
  },
  clearModels: {
    summary: 'Unload every model that is not pinned',
    response: listResponse(503, 504),
  },
};

const POLL_MS = 50;

/**
 * Registers the model manager routes and `GET /models`.
 *
 * @throws (answered) INVALID_REQUEST without a model_id, MODEL_NOT_FOUND for a model not
 *   served, MODEL_PINNED when removing a pinned one, NOT_READY when no inference process
 *   listens, DEADLINE_EXCEEDED when the change does not show within `timeoutMs`
 */
export function registerModelRoutes(app: FastifyInstance, deps: ModelRoutesDeps): void {
  const { models, needsKey } = deps;
  const loaded = (all: Map<string, ModelDescription>): ModelList => ({
    models: [...all.values()].filter((m) => m.loaded).map(describe),
  });

  // Read from Redis on every call: the answer must show a load or unload that just happened.
  app.get('/model/registry', { schema: routeSchemas.registry, ...needsKey }, async () =>
    loaded(await models.fresh()),
  );

  app.get(
    '/models',
    { schema: routeSchemas.models, ...needsKey },
    async (): Promise<ServedModels> => ({
      models: [...(await models.fresh()).values()].map((m) => ServedModelSchema.parse(m)),
    }),
  );

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

/** Roboflow's ModelDescriptionEntity of a model: the fields of ModelEntrySchema. */
export function describe(m: ModelDescription): ModelEntry {
  return ModelEntrySchema.parse(m);
}

/** The model_id of an add/remove body. @throws PipelineError INVALID_REQUEST without one */
function modelIdOf(body: unknown): string {
  const parsed = ModelIdBodySchema.safeParse(body ?? {});
  if (!parsed.success) throw invalidRequest(parsed.error);
  return parsed.data.model_id;
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
