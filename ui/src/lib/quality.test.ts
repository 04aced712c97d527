// Unit tests: the call-quality badge's grade, text and explanation.

import { describe, expect, test } from 'vitest';
import { setLanguage, t } from './i18n/index.svelte';
import { callQualityExplained, mosGrade, qualityBadge, qualityExplained, qualityGrade } from './quality';

describe('call-quality badge', () => {
  test('grades follow G.109 lines on R', () => {
    expect(qualityGrade({ r_factor: 93.2 })).toBe('good');
    expect(qualityGrade({ r_factor: 80 })).toBe('good');
    expect(qualityGrade({ r_factor: 79.9 })).toBe('fair');
    expect(qualityGrade({ r_factor: 70 })).toBe('fair');
    expect(qualityGrade({ r_factor: 69.9 })).toBe('poor');
  });

  test('the badge shows the MOS and its tooltip says what it came from', () => {
    setLanguage('en');
    expect(qualityBadge({ mos: 4.409 })).toBe('4.4');
    const quality = { loss_percent: 2.25, rtt_ms: 41.6, jitter_ms: 3.2, r_factor: 86.4, mos: 4.24 };
    expect(qualityExplained(quality, t)).toBe('Call quality 4.2 of 5, good (E-model R 86): 2.3 % lost, 42 ms round trip, 3 ms jitter');
    expect(qualityExplained({ ...quality, rtt_ms: null, jitter_ms: null, r_factor: 60, mos: 3.1 }, t)).toBe(
      'Call quality 3.1 of 5, poor (E-model R 60): 2.3 % lost, not yet measured round trip, not yet measured jitter',
    );
    setLanguage('zh');
    expect(qualityExplained(quality, t)).toContain('4.2');
    setLanguage('en');
  });

  test("a past call's score is graded by its mean MOS on the same lines", () => {
    expect([4.41, 3.96, 3.94, 3.58, 3.54].map(mosGrade)).toEqual(['good', 'good', 'fair', 'fair', 'poor']);
    setLanguage('en');
    expect(callQualityExplained({ mos_average: 3.58, mos_worst: 1.13 }, t)).toBe('Call quality 3.6 of 5 on average, fair; 1.1 at its worst');
  });
});
