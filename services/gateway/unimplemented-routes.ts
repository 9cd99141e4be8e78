import type { FastifyInstance } from 'fastify';
import { ErrorCode, PipelineError } from '../../shared/errors.js';

/**
 * Roboflow Inference routes this server does not implement (from roboflow/inference's
 * `inference/core/interfaces/http/http_api.py`, release 1.5). Each answers 501
 * `NOT_IMPLEMENTED` naming the feature, instead of falling into the legacy route
 * `/{dataset_id}/{version_id}` (which would read `/workflows/run` as model `workflows/run` and
 * complain about its body) or answering a bare 404.
 */
export const UNIMPLEMENTED_ROUTES: ReadonlyArray<{ path: string; feature: string }> = [
  ...[
    '/workflows/run',
    '/workflows/validate',
    '/workflows/describe_interface',
    '/workflows/blocks/describe',
    '/workflows/blocks/dynamic_outputs',
    '/workflows/definition/schema',
    '/workflows/execution_engine/versions',
    '/infer/workflows',
    '/infer/workflows/:workspace_name/:workflow_id',
    '/:workspace_name/workflows/:workflow_id',
    '/:workspace_name/workflows/:workflow_id/describe_interface',
    '/build/*',
  ].map((path) => ({ path, feature: 'Workflows' })),
  { path: '/infer/classification', feature: 'classification' },
  { path: '/infer/instance_segmentation', feature: 'instance segmentation' },
  { path: '/infer/keypoints_detection', feature: 'keypoint detection' },
  { path: '/infer/semantic_segmentation', feature: 'semantic segmentation' },
  { path: '/infer/depth-estimation', feature: 'depth estimation' },
  { path: '/infer/depth-estimation/*', feature: 'depth estimation' },
  { path: '/infer/lmm', feature: 'large multimodal models' },
  { path: '/infer/lmm/*', feature: 'large multimodal models' },
  ...['/clip/embed_image', '/clip/embed_text', '/clip/compare'].map((path) => ({
    path,
    feature: 'CLIP',
  })),
  ...[
    '/perception_encoder/embed_image',
    '/perception_encoder/embed_text',
    '/perception_encoder/compare',
  ].map((path) => ({ path, feature: 'Perception Encoder' })),
  { path: '/gaze/gaze_detection', feature: 'gaze detection' },
  ...[
    '/sam/embed_image',
    '/sam/segment_image',
    '/sam2/embed_image',
    '/sam2/segment_image',
    '/sam3/embed_image',
    '/sam3/concept_segment',
    '/sam3/visual_segment',
    '/sam3_3d/infer',
  ].map((path) => ({ path, feature: 'Segment Anything' })),
  ...['/doctr/ocr', '/easy_ocr/ocr', '/ocr/trocr', '/ocr/pp-ocr'].map((path) => ({
    path,
    feature: 'OCR',
  })),
  { path: '/yolo_world/infer', feature: 'YOLO-World' },
  { path: '/owlv2/infer', feature: 'OWLv2' },
  { path: '/grounding_dino/infer', feature: 'Grounding DINO' },
  ...[
    '/inference_pipelines/list',
    '/inference_pipelines/initialise',
    '/inference_pipelines/initialise_webrtc',
    '/inference_pipelines/:pipeline_id/:action',
    '/initialise_webrtc_worker',
    '/webrtc/session/heartbeat',
    '/webrtc/session/heartbeat/end',
  ].map((path) => ({ path, feature: 'video stream pipelines' })),
  { path: '/start/:dataset_id/:version_id', feature: 'video stream pipelines' },
  { path: '/notebook/start', feature: 'the Jupyter notebook' },
  { path: '/clear_cache', feature: 'the model cache' },
  { path: '/device/stats', feature: 'device statistics' },
  { path: '/logs', feature: 'the log viewer' },
];

/**
 * Registers every route of UNIMPLEMENTED_ROUTES for GET and POST. The answer is given before
 * the body is read (in `onRequest`), so neither a large body nor its content type matters.
 */
export function registerUnimplementedRoutes(app: FastifyInstance): void {
  for (const { path, feature } of UNIMPLEMENTED_ROUTES) {
    app.route({
      method: ['GET', 'POST'],
      url: path,
      // Kept out of the API documentation, which lists what the server does; the README
      // lists these.
      schema: { hide: true },
      onRequest: (req, _reply, done) => {
        const error = new PipelineError(
          ErrorCode.NOT_IMPLEMENTED,
          `${req.method} ${req.url.split('?')[0]}: ${feature} (a route of Roboflow's API) is not implemented by this server; it serves object detection (POST /infer/object_detection, POST /{dataset_id}/{version_id}) and the model routes`,
        );
        done(error);
      },
      // Never reached: onRequest always answers.
      handler: (_req, reply) => reply.status(501).send(),
    });
  }
}
