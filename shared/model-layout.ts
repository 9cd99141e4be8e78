import { z } from 'zod';

/**
 * The detector families the inference stage understands, and how each wants its input prepared.
 * Shared because `pre` letterboxes for the model it serves, `infer` builds the input tensor and
 * decodes the output, and the configuration names the layouts.
 */

/**
 * Output layouts:
 * - `yolov8`: `[batch, 4 + classes, anchors]` (YOLOv8, YOLO11, YOLOv5u): boxes cx, cy, w, h in
 *   input pixels, then one sigmoided score per class; no objectness.
 * - `yolov5`: `[batch, anchors, 5 + classes]` (YOLOv5, YOLOv7): per anchor cx, cy, w, h,
 *   objectness, class scores; score = objectness × class score.
 * - `yolox`: `[batch, grid cells, 5 + classes]`, the raw YOLOX head: boxes still relative to
 *   their grid cell over strides 8, 16, 32; objectness and class scores sigmoided.
 * - `end2end`: `[batch, detections, 6]`, models with NMS built in (YOLOv10, Ultralytics
 *   end2end exports): x1, y1, x2, y2, score, class.
 */
export const MODEL_LAYOUTS = ['yolov8', 'yolov5', 'yolox', 'end2end'] as const;
export type ModelLayout = (typeof MODEL_LAYOUTS)[number];

/** Where the resized image sits in the model input; the rest is grey (114) padding. */
export const PAD_PLACEMENTS = ['centre', 'top-left'] as const;
export type PadPlacement = (typeof PAD_PLACEMENTS)[number];

/**
 * How images are turned into the model's input tensor. Part of the model description the
 * inference process publishes (contracts.ts), hence a schema.
 */
export const PreprocessingSchema = z.object({
  /** `centre` (Ultralytics) or `top-left` (YOLOX pads only at the bottom and right). */
  pad: z.enum(PAD_PLACEMENTS),
  /** Channel order of the input tensor. */
  channelOrder: z.enum(['rgb', 'bgr']),
  /** Multiplier from 0..255 pixel values to input values: 1/255 for 0..1, 1 for 0..255. */
  scale: z.number().positive(),
});
export type Preprocessing = z.infer<typeof PreprocessingSchema>;

const ULTRALYTICS: Preprocessing = { pad: 'centre', channelOrder: 'rgb', scale: 1 / 255 };

/** The preprocessing each family was trained with. */
export const DEFAULT_PREPROCESSING: Readonly<Record<ModelLayout, Readonly<Preprocessing>>> = {
  yolov8: ULTRALYTICS,
  yolov5: ULTRALYTICS,
  end2end: ULTRALYTICS,
  // Megvii's YOLOX: BGR, no scaling, resized image at the top-left.
  yolox: { pad: 'top-left', channelOrder: 'bgr', scale: 1 },
};
