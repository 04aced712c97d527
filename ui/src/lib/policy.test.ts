// Unit tests: what the administrator's policy locks, and what the UI offers under it.

import { describe, expect, test } from 'vitest';
import type { Policy } from './bindings/Policy';
import { setLanguage } from './i18n/index.svelte';
import { allowedMedia, callMedia, lockedIncoming, lockReason, locks, NO_POLICY, serverChoice } from './policy';

/** A policy file at the usual place that locks what `locked` says. */
const policy = (locked: Partial<Policy> = {}): Policy => ({ ...NO_POLICY, file: '/etc/hark/policy.toml', ...locked });

describe('policy', () => {
  test('without video, every call is an audio call and only audio is offered', () => {
    expect(allowedMedia(NO_POLICY, 'video')).toBe('video');
    expect(allowedMedia(NO_POLICY, 'audio')).toBe('audio');
    expect(callMedia(NO_POLICY)).toEqual(['audio', 'video']);
    const noVideo = policy({ video: false });
    expect(allowedMedia(noVideo, 'video')).toBe('audio');
    expect(allowedMedia(noVideo, 'audio')).toBe('audio');
    expect(callMedia(noVideo)).toEqual(['audio']);
  });

  test("a lock's reason is the administrator's words, else a plain sentence in the UI's language", () => {
    expect(lockReason(policy({ reason: 'Acme IT: calls stay on our server' }))).toBe('Acme IT: calls stay on our server');
    setLanguage('en');
    expect(lockReason(policy())).toBe('Set by your administrator');
    setLanguage('zh');
    expect(lockReason(policy())).toBe('由管理员设置');
    setLanguage('en');
  });

  test('the sign-in server: fixed by a lock (null: the built-in one), else free with or without the built-in one', () => {
    expect(serverChoice(NO_POLICY)).toEqual({ kind: 'free', builtin: true });
    expect(serverChoice(policy({ builtin_server: false }))).toEqual({ kind: 'free', builtin: false });
    expect(serverChoice(policy({ server_locked: true, server: 'https://hark.acme.example', builtin_server: false }))).toEqual({
      kind: 'locked',
      server: 'https://hark.acme.example',
    });
    expect(serverChoice(policy({ server_locked: true, server: null }))).toEqual({ kind: 'locked', server: null });
  });

  test('the incoming presentation is locked only with the lock, to the banner when none is named', () => {
    expect(lockedIncoming(policy({ default_incoming: 'full_screen' })), 'a default is no lock').toBeNull();
    expect(lockedIncoming(policy({ default_incoming: 'full_screen', incoming_locked: true }))).toBe('full_screen');
    expect(lockedIncoming(policy({ incoming_locked: true }))).toBe('banner');
  });

  test('what is locked, listed: nothing without a file or with an empty one, else each lock once', () => {
    expect(locks(NO_POLICY)).toEqual([]);
    // The same switches with no file behind them lock nothing: there is no policy.
    expect(locks({ ...NO_POLICY, video: false })).toEqual([]);
    expect(locks(policy())).toEqual([]);
    const everything = policy({
      server_locked: true,
      server: 'https://hark.acme.example',
      builtin_server: false,
      video: false,
      invite_more: false,
      relay_only: true,
      custom_ringtones: false,
      default_incoming: 'full_screen',
      incoming_locked: true,
    });
    expect(locks(everything)).toEqual([
      { id: 'server', key: 'policy.server', params: { server: 'https://hark.acme.example' } },
      { id: 'video', key: 'policy.video_off' },
      { id: 'invite_more', key: 'policy.invite_off' },
      { id: 'custom_ringtones', key: 'policy.ringtone_files_off' },
      { id: 'incoming', key: 'policy.incoming_full' },
      { id: 'relay_only', key: 'policy.relay_only' },
    ]);
    // A server lock already says the built-in one is out; without one, that is its own line.
    expect(locks(policy({ server_locked: true, server: null }))).toEqual([{ id: 'server', key: 'policy.server_builtin' }]);
    expect(locks(policy({ builtin_server: false }))).toEqual([{ id: 'builtin_server', key: 'policy.no_builtin' }]);
  });
});
