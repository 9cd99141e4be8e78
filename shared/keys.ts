/**
 * Redis key conventions. Every key starts with the stack's prefix (REDIS_PREFIX) so several
 * stacks, or several test runs, can share one Redis. Per-request keys always get a TTL when
 * written and are deleted by the stage that consumes them.
 */
export class Keys {
  constructor(readonly prefix: string) {}

  /**
   * Original image bytes: an upload, written by the gateway, or a URL image's download, written
   * by the `fetch` worker; read by `pre`, and by `post` to draw on.
   */
  image(id: string): string {
    return `${this.prefix}:img:${id}`;
  }

  /** Letterboxed RGB uint8 pixels (HWC), written by `pre`, read by `infer`. */
  pixels(id: string): string {
    return `${this.prefix}:px:${id}`;
  }

  /** Compact detection candidates (see candidates.ts), written by `infer`, read by `post`. */
  candidates(id: string): string {
    return `${this.prefix}:cand:${id}`;
  }

  /** Every per-request data key of one image, for cleanup when its request ends early. */
  requestData(id: string): string[] {
    return [this.image(id), this.pixels(id), this.candidates(id)];
  }

  /** BullMQ's hash of the job of image `id` in `queue` (the job id is the inference id). */
  job(queue: string, id: string): string {
    return `${this.prefix}:${queue}:${id}`;
  }

  /** The list a gateway instance pops its finished requests from. */
  replies(gatewayId: string): string {
    return `${this.prefix}:reply:${gatewayId}`;
  }

  /**
   * Hash of one asynchronous request (shared/async-requests.ts): its `meta` (AsyncMetaSchema
   * JSON), `total` and `done` image counts, `failed` count, `started_at` / `completed_at`
   * (epoch ms) and `webhook` (delivery state). Expires ASYNC_RESULT_TTL_S after it finished
   * (before: its deadline plus that).
   */
  asyncRecord(requestId: string): string {
    return `${this.prefix}:async:${requestId}`;
  }

  /** Hash of one asynchronous request's finished images: inference id → ResultMessage JSON. */
  asyncResults(requestId: string): string {
    return `${this.prefix}:async:${requestId}:results`;
  }

  /** Pub/sub channel of model commands (load, unload, clear) from the gateway to `infer`. */
  modelControl(): string {
    return `${this.prefix}:model-control`;
  }

  /** The stack's id, a UUID that `GET /info` answers (no TTL; written on first use). */
  serverId(): string {
    return `${this.prefix}:server-id`;
  }

  /** Heartbeat of one live instance of a role (a `model` heartbeat carries its description). */
  alive(role: string, instanceId: string): string {
    return `${this.prefix}:alive:${role}:${instanceId}`;
  }

  /** Set of instance ids that ever announced themselves for a role; pruned by readers. */
  aliveSet(role: string): string {
    return `${this.prefix}:alive:${role}`;
  }
}
