// Unit tests: sign-in state, profile changes and connection events.

import { describe, expect, test } from 'vitest';
import { NO_POLICY } from '../policy';
import { fakeBackend } from '../testing/fakeBackend';
import { DEFAULT_SETTINGS } from './settings.svelte';
import { SessionStore } from './session.svelte';

const request = { server: null, user: 'me', password: 'pw', register: false, nickname: null, avatar: null };

describe('session', () => {
  test('app_info with or without a remembered account', () => {
    const store = new SessionStore(fakeBackend());
    expect(store.status).toBe('loading');
    store.applyInfo({ version: '1', embedded_server: null, account: null, last_user: 'me', settings: DEFAULT_SETTINGS, policy: NO_POLICY });
    expect(store.status).toBe('signed_out');
    expect(store.lastUser).toBe('me');
    store.applyInfo({
      version: '1',
      embedded_server: null,
      account: { user: 'me', nickname: 'Me', avatar: null, server: 'x', embedded: true },
      last_user: 'me',
      settings: DEFAULT_SETTINGS,
      policy: NO_POLICY,
    });
    expect(store.status).toBe('signed_in');
  });

  test('sign in, and a wrong password', async () => {
    let attempts = 0;
    const store = new SessionStore(
      fakeBackend({
        signIn: async () => {
          attempts += 1;
          if (attempts === 1) throw { code: 'unauthorized', message: 'bad password' };
          return { user: 'me', nickname: 'Me', avatar: null, server: 'http://x', embedded: false };
        },
      }),
    );
    expect(await store.signIn(request)).toBeNull();
    expect(store.status).toBe('signed_out');
    expect(store.error?.code).toBe('unauthorized');
    expect((await store.signIn(request))?.user).toBe('me');
    expect(store.status).toBe('signed_in');
    expect(store.error).toBeNull();
  });

  test('connection events', () => {
    const store = new SessionStore(fakeBackend());
    store.status = 'signed_in';
    store.handle({ event: 'signaling_lost', reason: 'eof', kicked: null });
    expect(store.reconnecting).toBe(true);
    store.handle({ event: 'signed_in', user: 'me', resumed: true });
    expect(store.reconnecting).toBe(false);
    store.handle({ event: 'sign_in_refused', code: 'token_expired', message: 'expired' });
    expect(store.status).toBe('signed_out');
    expect(store.error?.code).toBe('token_expired');
  });

  test('profile changes update the account; a refusal keeps the old one', async () => {
    let refuse = false;
    const backend = fakeBackend({
      setProfile: async () => {
        if (refuse) throw { code: 'payload_too_large', message: 'too big' };
        return null;
      },
    });
    const store = new SessionStore(backend);
    expect(await store.setProfile('X', null)).toBe(false);
    store.account = { user: 'me', nickname: 'Me', avatar: null, server: 'x', embedded: true };
    expect(await store.setProfile('  Mia ', 'data:image/jpeg;base64,AA')).toBe(true);
    expect(backend.callsOf('setProfile')).toEqual([['Mia', 'data:image/jpeg;base64,AA']]);
    expect(store.account.nickname).toBe('Mia');
    refuse = true;
    expect(await store.setProfile('Other', null)).toBe(false);
    expect(store.account.nickname).toBe('Mia');
    expect(store.error?.code).toBe('payload_too_large');
  });

  test('sign out signs out here even if the engine complains', async () => {
    const store = new SessionStore(
      fakeBackend({
        signOut: async () => {
          throw { code: 'engine_stopped', message: 'x' };
        },
      }),
    );
    store.status = 'signed_in';
    await store.signOut();
    expect(store.status).toBe('signed_out');
    expect(store.account).toBeNull();
  });
});
