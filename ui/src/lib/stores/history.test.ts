// Unit tests: recent calls, the Missed tab, redial targets, delete and clear.

import { describe, expect, test } from 'vitest';
import type { CallRecord } from '../bindings/CallRecord';
import { fakeBackend } from '../testing/fakeBackend';
import { HistoryStore, isMissed, otherParty, redialTarget } from './history.svelte';

const record = (call_id: string, patch: Partial<CallRecord> = {}): CallRecord => ({
  call_id,
  caller: 'me',
  invitees: ['bob'],
  media: 'audio',
  started_at: 1_700_000_000_000,
  connected_at: null,
  ended_at: 1_700_000_030_000,
  duration_s: 0,
  direction: 'outgoing',
  result: 'completed',
  ...patch,
});

const records: CallRecord[] = [
  record('c4', { caller: 'alice', invitees: ['me'], direction: 'incoming', result: 'missed' }),
  record('c3', { result: 'completed', duration_s: 75, connected_at: 1 }),
  record('c2', { caller: 'alice', invitees: ['me'], direction: 'incoming', result: 'declined' }),
  record('c1', { caller: 'carol', invitees: ['me', 'dave'], direction: 'incoming', result: 'missed', media: 'video' }),
];

describe('history', () => {
  test('missed means an incoming call never answered', () => {
    expect(records.filter(isMissed).map((r) => r.call_id)).toEqual(['c4', 'c1']);
    expect(isMissed(record('x', { direction: 'outgoing', result: 'no_answer' }))).toBe(false);
  });

  test('tabs', async () => {
    const store = new HistoryStore(fakeBackend({ history: async () => structuredClone(records) }));
    await store.load();
    expect(store.visible.map((r) => r.call_id)).toEqual(['c4', 'c3', 'c2', 'c1']);
    store.tab = 'missed';
    expect(store.visible.map((r) => r.call_id)).toEqual(['c4', 'c1']);
    expect(store.missedCount).toBe(2);
  });

  test('missed calls are news until the list is seen', async () => {
    const store = new HistoryStore(fakeBackend({ history: async () => structuredClone(records) }));
    await store.load();
    expect(store.unseenMissed).toBe(2);
    store.markSeen(records[0]!.started_at);
    expect(store.unseenMissed).toBe(2);
    store.markSeen(records[0]!.started_at + 1);
    expect(store.unseenMissed).toBe(0);
    store.markSeen(0);
    expect(store.unseenMissed).toBe(0);
    expect(store.missedCount).toBe(2);
  });

  test('the other party and redial (1:1 only)', () => {
    expect(otherParty(records[0]!, 'me')).toEqual(['alice']);
    expect(otherParty(records[1]!, 'me')).toEqual(['bob']);
    expect(otherParty(records[3]!, 'me')).toEqual(['carol', 'dave']);
    expect(redialTarget(records[0]!, 'me')).toBe('alice');
    expect(redialTarget(records[3]!, 'me')).toBeNull();
    expect(redialTarget(record('g', { invitees: ['bob', 'carol'] }), 'me')).toBeNull();
  });

  test('delete and clear', async () => {
    const backend = fakeBackend({ history: async () => structuredClone(records) });
    const store = new HistoryStore(backend);
    await store.load();
    await store.remove('c3');
    expect(backend.callsOf('deleteHistory')).toEqual([[['c3']]]);
    expect(store.records.map((r) => r.call_id)).toEqual(['c4', 'c2', 'c1']);
    await store.clear();
    expect(backend.callsOf('clearHistory')).toHaveLength(1);
    expect(store.records).toEqual([]);
  });

  test('a refused delete keeps the record and the code', async () => {
    const store = new HistoryStore(
      fakeBackend({
        history: async () => structuredClone(records),
        deleteHistory: async () => {
          throw { code: 'timed_out', message: 'slow' };
        },
      }),
    );
    await store.load();
    await store.remove('c3');
    expect(store.records).toHaveLength(4);
    expect(store.error?.code).toBe('timed_out');
  });
});
