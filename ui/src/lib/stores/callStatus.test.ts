// Unit tests: the call view's status line for every phase and end.

import type { ApiCode } from '../bindings/ApiCode';
import { describe, expect, test } from 'vitest';
import { setLanguage, t } from '../i18n/index.svelte';
import { callStatus, type CallStatusInput } from './callStatus';

const base: CallStatusInput = { phase: 'idle', joining: false, media: 'audio', peers: [], end: null, endedFrom: 'idle', error: null, links: {} };

function status(patch: Partial<CallStatusInput>): string {
  return callStatus({ ...base, ...patch }, t);
}

describe('call status line', () => {
  setLanguage('en');

  test('phases', () => {
    expect(status({})).toBe('');
    expect(status({ phase: 'incoming' })).toBe('Incoming audio call');
    expect(status({ phase: 'incoming', media: 'video' })).toBe('Incoming video call');
    expect(status({ phase: 'incoming', joining: true })).toBe('Connecting…');
    expect(status({ phase: 'dialing' })).toBe('Calling…');
    expect(status({ phase: 'dialing', joining: true })).toBe('Connecting…');
    expect(status({ phase: 'connected', peers: [{ user: 'b', state: 'joined' }] })).toBe('Connected');
    expect(status({ phase: 'connected', peers: [{ user: 'b', state: 'joined' }], links: { b: 'reconnecting' } })).toBe('Reconnecting…');
    expect(status({ phase: 'connected', peers: [{ user: 'b', state: 'joined' }], links: { b: 'connected' } }), 'media came back').toBe('Connected');
    expect(status({ phase: 'connected', peers: [{ user: 'b', state: 'joined' }], links: { b: 'lost' } }), 'gone for long').toBe(
      'Connection lost. Still trying…',
    );
    expect(
      status({
        phase: 'connected',
        peers: [
          { user: 'b', state: 'joined' },
          { user: 'c', state: 'joined' },
          { user: 'd', state: 'ringing' },
        ],
      }),
    ).toBe('3 people in the call');
    const group = [
      { user: 'b', state: 'joined' as const },
      { user: 'c', state: 'joined' as const },
    ];
    expect(status({ phase: 'connected', peers: group, links: { c: 'reconnecting' } }), "a group's tile says whose link it is").toBe('3 people in the call');
  });

  test('ends', () => {
    const ended = (end: CallStatusInput['end'], more: Partial<CallStatusInput> = {}) => status({ phase: 'ended', end, endedFrom: 'dialing', ...more });
    expect(ended({ kind: 'ended', reason: 'hangup', durationS: 3 })).toBe('Call ended');
    expect(ended({ kind: 'ended', reason: 'failed', durationS: 3 })).toBe('Call failed');
    expect(ended({ kind: 'not_connected', reason: 'rejected' })).toBe('Declined');
    expect(ended({ kind: 'not_connected', reason: 'busy' })).toBe('Busy');
    expect(ended({ kind: 'not_connected', reason: 'no_answer' })).toBe('No answer');
    expect(ended({ kind: 'not_connected', reason: 'cancelled' })).toBe('Call cancelled');
    expect(ended({ kind: 'not_connected', reason: 'cancelled' }, { endedFrom: 'incoming' })).toBe('Missed call');
    expect(ended({ kind: 'not_connected', reason: 'no_answer' }, { endedFrom: 'incoming' })).toBe('Missed call');
    expect(ended({ kind: 'not_connected', reason: 'handled_elsewhere' })).toBe('Answered on another device');
    expect(ended({ kind: 'not_connected', reason: 'failed' })).toBe('Call failed');
    expect(ended({ kind: 'not_connected', reason: 'failed' }, { error: { code: 'not_found', message: '' } })).toBe('Could not call: No such user.');
    expect(ended({ kind: 'refused', code: 'wrong_state' })).toBe('Could not call: That is not possible right now.');
    // A code from a newer server than this build knows.
    expect(ended({ kind: 'refused', code: 'something_new' as ApiCode })).toBe('Could not call: Something went wrong.');
  });

  test('in Chinese', () => {
    setLanguage('zh');
    try {
      expect(status({ phase: 'dialing' })).toBe('正在呼叫…');
      expect(status({ phase: 'ended', end: { kind: 'not_connected', reason: 'busy' } })).toBe('对方忙线');
    } finally {
      setLanguage('en');
    }
  });
});
