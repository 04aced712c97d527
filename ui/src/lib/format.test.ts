// Unit tests: timer, duration, date and initials formatting.

import { describe, expect, test } from 'vitest';
import { elapsedSeconds, formatDuration, formatWhen, initials } from './format';

describe('format', () => {
  test('durations', () => {
    expect(formatDuration(0)).toBe('00:00');
    expect(formatDuration(7.9)).toBe('00:07');
    expect(formatDuration(75)).toBe('01:15');
    expect(formatDuration(3599)).toBe('59:59');
    expect(formatDuration(3600)).toBe('1:00:00');
    expect(formatDuration(-5)).toBe('00:00');
  });

  test('elapsed seconds never go negative', () => {
    expect(elapsedSeconds(1000, 4999)).toBe(3);
    expect(elapsedSeconds(5000, 1000)).toBe(0);
  });

  test('when: time today, weekday this week, date before', () => {
    const now = new Date(2026, 10, 20, 15, 0).getTime();
    expect(formatWhen(new Date(2026, 10, 20, 9, 5).getTime(), now, 'en-GB')).toBe('09:05');
    expect(formatWhen(new Date(2026, 10, 18, 9, 5).getTime(), now, 'en-GB')).toMatch(/^Wed 09:05$/);
    expect(formatWhen(new Date(2026, 0, 2, 9, 5).getTime(), now, 'en-GB')).toMatch(/2 Jan 2026.*09:05/);
  });

  test('initials', () => {
    expect(initials('Alice Liddell')).toBe('AL');
    expect(initials('bob')).toBe('B');
    expect(initials('张伟')).toBe('张');
    expect(initials('  ')).toBe('?');
    expect(initials('mary-jane watson')).toBe('MJ');
  });
});
