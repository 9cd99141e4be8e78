/**
 * Box colours by class id (a Roboflow-like palette), shared by the drawn `visualization` and the
 * demo page, so one class has one colour everywhere.
 */
export const BOX_COLOURS = [
  '#A351FB',
  '#FF4040',
  '#FFA1A0',
  '#FF7633',
  '#FFB633',
  '#D1D435',
  '#4CFB12',
  '#94CF1A',
  '#40DE8A',
  '#1B9640',
  '#00D6C1',
  '#2E9CAA',
  '#00C4FF',
  '#364797',
  '#6675FF',
  '#0019EF',
  '#863AFF',
  '#530087',
  '#CD3AFF',
  '#FF97CA',
] as const;

/** The colour of a class's boxes. */
export function boxColour(classId: number): string {
  return BOX_COLOURS[classId % BOX_COLOURS.length]!;
}
