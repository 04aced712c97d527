// Unit tests: the `engine` event's wire shapes, as serde writes them, become AppEvents.

import { describe, expect, test } from 'vitest';
import { normalizeEvent } from './events';

describe('normalizeEvent', () => {
  test('a call event as serde writes it: two "event" keys, the inner one wins in JSON.parse', () => {
    const wire = '{"event":"call","event":"dialing","call_id":"c1","invitees":["bob"]}';
    expect(normalizeEvent(JSON.parse(wire))).toEqual({ kind: 'call', call: { event: 'dialing', call_id: 'c1', invitees: ['bob'] } });
  });

  test('a nested call event is accepted too', () => {
    expect(normalizeEvent({ event: 'call', call: { event: 'user_left', user: 'bob' } })).toEqual({
      kind: 'call',
      call: { event: 'user_left', user: 'bob' },
    });
    expect(normalizeEvent({ event: 'call', call: { event: 'nonsense' } })).toBeNull();
    expect(normalizeEvent({ event: 'call' })).toBeNull();
  });

  test('engine events', () => {
    expect(normalizeEvent({ event: 'presence', user: 'bob', status: 'online' })).toEqual({
      kind: 'engine',
      event: { event: 'presence', user: 'bob', status: 'online' },
    });
    expect(normalizeEvent({ event: 'ringtone_stopped' })?.kind).toBe('engine');
  });

  test('unknown or malformed payloads are dropped', () => {
    expect(normalizeEvent({ event: 'from_the_future' })).toBeNull();
    expect(normalizeEvent({ kind: 'dialing' })).toBeNull();
    expect(normalizeEvent('dialing')).toBeNull();
    expect(normalizeEvent(null)).toBeNull();
  });
});
