// Formatting of durations and times for the call timer and the history list.

/** `m:ss`-style timer text: `00:07`, `12:34`, `1:02:03`. Negative input counts as zero. */
export function formatDuration(seconds: number): string {
  const s = Math.max(0, Math.floor(seconds));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const pad = (n: number) => String(n).padStart(2, '0');
  return h > 0 ? `${h}:${pad(m)}:${pad(s % 60)}` : `${pad(m)}:${pad(s % 60)}`;
}

/** Whole seconds from `sinceMs` to `nowMs` (a server time may be slightly ahead of ours). */
export function elapsedSeconds(sinceMs: number, nowMs: number): number {
  return Math.max(0, Math.floor((nowMs - sinceMs) / 1000));
}

/**
 * When a call happened, for the history list: the time today, "weekday time" within the last
 * week, the date otherwise.
 */
export function formatWhen(atMs: number, nowMs: number, locale: string): string {
  const at = new Date(atMs);
  const now = new Date(nowMs);
  const time = at.toLocaleTimeString(locale, { hour: '2-digit', minute: '2-digit' });
  if (at.toDateString() === now.toDateString()) return time;
  const days = (nowMs - atMs) / 86_400_000;
  if (days < 6) return `${at.toLocaleDateString(locale, { weekday: 'short' })} ${time}`;
  return `${at.toLocaleDateString(locale, { year: 'numeric', month: 'short', day: 'numeric' })} ${time}`;
}

/** Initials for an avatar placeholder: the first letters of the first two words ("Alice
 *  Liddell" → "AL", "bob" → "B", "张伟" → "张"). */
export function initials(name: string): string {
  const words = name.trim().split(/[\s._-]+/).filter(Boolean);
  if (words.length === 0) return '?';
  return words
    .slice(0, 2)
    .map((word) => Array.from(word)[0]!)
    .join('')
    .toUpperCase();
}
