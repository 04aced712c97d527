// A clock for tests: time moves only when `advance` is called, firing due timers in order.

import type { Clock, TimerId } from '../clock';

interface Timer {
  id: TimerId;
  at: number;
  every: number | null;
  run: () => void;
}

export class FakeClock implements Clock {
  private time: number;
  private timers: Timer[] = [];
  private nextId = 1;

  constructor(start = Date.UTC(2026, 10, 20, 9, 0, 0)) {
    this.time = start;
  }

  now(): number {
    return this.time;
  }

  setTimeout(run: () => void, ms: number): TimerId {
    return this.add(run, ms, null);
  }

  setInterval(run: () => void, ms: number): TimerId {
    return this.add(run, ms, Math.max(1, ms));
  }

  clearTimeout(id: TimerId): void {
    this.timers = this.timers.filter((t) => t.id !== id);
  }

  clearInterval(id: TimerId): void {
    this.clearTimeout(id);
  }

  /** How many timers are waiting (to check that stores clean up after themselves). */
  get pending(): number {
    return this.timers.length;
  }

  /** Moves time forward by `ms`, running each timer at its own moment. */
  advance(ms: number): void {
    const end = this.time + ms;
    for (;;) {
      const due = this.timers.filter((t) => t.at <= end).sort((a, b) => a.at - b.at || a.id - b.id)[0];
      if (!due) break;
      this.time = due.at;
      if (due.every === null) this.clearTimeout(due.id);
      else due.at += due.every;
      due.run();
    }
    this.time = end;
  }

  private add(run: () => void, ms: number, every: number | null): TimerId {
    const id = this.nextId++;
    this.timers.push({ id, at: this.time + Math.max(0, ms), every, run });
    return id;
  }
}
