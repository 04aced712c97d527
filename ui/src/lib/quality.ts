// The call-quality badge: the engine scores each link with ITU-T G.107's E-model (R, and the MOS
// it maps to); this says which of three grades a score is and explains it in words for the
// badge's tooltip. The grades follow G.109's categories: R 80 and up satisfies users (MOS 4.03),
// 70 to 80 leaves some dissatisfied (MOS 3.6), below that many are.

import type { CallQuality } from './bindings/CallQuality';
import type { MessageKey } from './i18n/en';

/** What the engine measured and scored for one person's link. */
export interface LinkQuality {
  loss_percent: number;
  rtt_ms: number | null;
  jitter_ms: number | null;
  r_factor: number;
  mos: number;
}

export type QualityGrade = 'good' | 'fair' | 'poor';

/** The grade of a link's score (by R, as G.109 draws the lines). */
export function qualityGrade(quality: Pick<LinkQuality, 'r_factor'>): QualityGrade {
  if (quality.r_factor >= 80) return 'good';
  if (quality.r_factor >= 70) return 'fair';
  return 'poor';
}

/** The grade of a MOS (a call's in history), on the same lines (R 80 is MOS 4.03, R 70 is 3.6),
 *  taken on the MOS as shown, to one decimal, so that a number and its colour always agree. */
export function mosGrade(mos: number): QualityGrade {
  const shown = Math.round(mos * 10);
  if (shown >= 40) return 'good';
  if (shown >= 36) return 'fair';
  return 'poor';
}

type Translate = (key: MessageKey, params?: Record<string, string | number>) => string;

/** The badge's text: the MOS to one decimal. */
export function qualityBadge(quality: Pick<LinkQuality, 'mos'>): string {
  return quality.mos.toFixed(1);
}

/** The badge's tooltip: the score, its grade, and what it came from. */
export function qualityExplained(quality: LinkQuality, t: Translate): string {
  const ms = (value: number | null) => (value === null ? t('quality.unmeasured') : t('quality.ms', { value: Math.round(value) }));
  return t('quality.explained', {
    mos: quality.mos.toFixed(1),
    grade: t(`quality.${qualityGrade(quality)}`),
    r: Math.round(quality.r_factor),
    loss: quality.loss_percent.toFixed(1),
    rtt: ms(quality.rtt_ms),
    jitter: ms(quality.jitter_ms),
  });
}

/** A past call's score in history: its mean, graded, and its worst moment. */
export function callQualityExplained(quality: CallQuality, t: Translate): string {
  return t('quality.call_explained', {
    average: quality.mos_average.toFixed(1),
    grade: t(`quality.${mosGrade(quality.mos_average)}`),
    worst: quality.mos_worst.toFixed(1),
  });
}
