// Unit tests: the incoming banner answers, declines and closes at the right moments.

import { describe, expect, test } from 'vitest';
import type { IncomingCall } from '../bindings/IncomingCall';
import { NO_POLICY } from '../policy';
import { fakeBackend, settle } from '../testing/fakeBackend';
import { BannerStore } from './banner.svelte';

const ringing: IncomingCall = { call_id: 'c1', caller: 'alice', caller_name: 'Alice', caller_avatar: null, invitees: ['me'], media: 'audio' };

describe('banner', () => {
  test('shows the ringing call and closes after accepting', async () => {
    const backend = fakeBackend({ incomingCall: async () => ringing });
    const banner = new BannerStore(backend);
    await banner.load();
    expect(banner.status).toBe('ringing');
    expect(banner.call?.caller_name).toBe('Alice');
    await banner.accept();
    expect(backend.callsOf('acceptCall')).toHaveLength(1);
    expect(backend.callsOf('closeWindow')).toHaveLength(1);
    expect(banner.status).toBe('closed');
    await banner.decline();
    expect(backend.callsOf('rejectCall')).toHaveLength(0);
  });

  test('a video call is answered with audio while the policy turns video off', async () => {
    const video: IncomingCall = { ...ringing, media: 'video' };
    const backend = fakeBackend({
      incomingCall: async () => video,
      policy: async () => ({ ...NO_POLICY, file: '/etc/hark/policy.toml', video: false }),
    });
    const banner = new BannerStore(backend);
    await banner.load();
    expect(banner.videoAllowed).toBe(false);
    await banner.accept();
    expect(backend.callsOf('acceptCall')).toEqual([[true]]);
  });

  test('a shell that will not tell the policy leaves video offered', async () => {
    const backend = fakeBackend({
      incomingCall: async () => ({ ...ringing, media: 'video' }),
      policy: async () => {
        throw { code: 'unknown', message: 'policy not allowed' };
      },
    });
    const banner = new BannerStore(backend);
    await banner.load();
    expect(banner.status).toBe('ringing');
    expect(banner.videoAllowed).toBe(true);
    expect(banner.error).toBeNull();
    await banner.accept();
    expect(backend.callsOf('acceptCall')).toEqual([[false]]);
  });

  test('closes at once when nothing rings', async () => {
    const backend = fakeBackend();
    const banner = new BannerStore(backend);
    await banner.load();
    expect(banner.status).toBe('closed');
    expect(backend.callsOf('closeWindow')).toHaveLength(1);
  });

  test('a refused decline keeps ringing with the error', async () => {
    const backend = fakeBackend({
      incomingCall: async () => ringing,
      rejectCall: async () => {
        throw { code: 'invalid_state', message: 'gone' };
      },
    });
    const banner = new BannerStore(backend);
    await banner.load();
    await banner.decline();
    expect(banner.status).toBe('ringing');
    expect(banner.error?.code).toBe('invalid_state');
  });

  test('closes when the call stops ringing; ignores other calls', async () => {
    const backend = fakeBackend({ incomingCall: async () => ringing });
    const banner = new BannerStore(backend);
    await banner.load();
    banner.handle({ kind: 'call', call: { event: 'not_connected', call_id: 'other', reason: 'cancelled' } });
    await settle();
    expect(banner.status).toBe('ringing');
    banner.handle({ kind: 'call', call: { event: 'not_connected', call_id: 'c1', reason: 'handled_elsewhere' } });
    await settle();
    expect(banner.status).toBe('closed');
  });
});
