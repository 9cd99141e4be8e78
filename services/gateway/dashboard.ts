import { createBullBoard } from '@bull-board/api';
import { BullMQAdapter } from '@bull-board/api/bullMQAdapter';
import { FastifyAdapter } from '@bull-board/fastify';
import type { Queue } from 'bullmq';
import type { FastifyInstance } from 'fastify';
import type { KeyGuard } from './auth.js';

/**
 * Bull Board at /admin/queues: the pipeline's queues and their jobs. Read-only by default;
 * `full` also allows retrying, cleaning and removing jobs, so expose it only where that is
 * wanted.
 */
export type DashboardMode = 'off' | 'readonly' | 'full';

export const DASHBOARD_PATH = '/admin/queues';

/** Registers Bull Board at DASHBOARD_PATH over `queues` (nothing when `mode` is `off`). */
export async function registerDashboard(
  app: FastifyInstance,
  queues: readonly Queue[],
  mode: DashboardMode,
  /** The API-key guard for the dashboard (ApiKeys.dashboardGuard). */
  guard: KeyGuard,
) {
  if (mode === 'off') return;
  const serverAdapter = new FastifyAdapter();
  serverAdapter.setBasePath(DASHBOARD_PATH);
  createBullBoard({
    queues: queues.map((q) => new BullMQAdapter(q, { readOnlyMode: mode === 'readonly' })),
    serverAdapter,
  });
  // In its own scope, so the API-key guard covers the dashboard and nothing else.
  await app.register(async (scope) => {
    scope.addHook('onRequest', guard);
    await scope.register(serverAdapter.registerPlugin(), { prefix: DASHBOARD_PATH });
  });
}
