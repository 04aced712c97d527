// Unit tests: the main window wiring, with a fake backend: start, events to stores, sign-in and out.

import { describe, expect, test } from 'vitest';
import type { CallEvent } from '../bindings/CallEvent';
import type { CallReplay } from '../bindings/CallReplay';
import type { OpenedLink } from '../bindings/OpenedLink';
import { currentLanguage, setLanguage } from '../i18n/index.svelte';
import { fakeBackend, settle } from '../testing/fakeBackend';
import { FakeClock } from '../testing/fakeClock';
import { NO_POLICY } from '../policy';
import { HarkApp } from './app.svelte';
import { DEFAULT_SETTINGS } from './settings.svelte';

const account = { user: 'me', nickname: 'Me', avatar: null, server: 'http://127.0.0.1:7000', embedded: true };

function signedInBackend() {
  return fakeBackend({
    appInfo: async () => ({ version: '1.2.3', embedded_server: null, account, last_user: 'me', settings: { ...DEFAULT_SETTINGS, language: 'zh', incoming: 'full_screen' }, policy: NO_POLICY }),
    contacts: async () => [{ user: 'bob', nickname: 'Bob', alias: null, status: 'offline' }],
  });
}

describe('app wiring', () => {
  test('start with a remembered account loads everything and follows the settings', async () => {
    const backend = signedInBackend();
    const app = new HarkApp(backend, new FakeClock());
    await app.start();
    await settle();
    expect(app.session.status).toBe('signed_in');
    expect(app.call.me).toBe('me');
    expect(currentLanguage()).toBe('zh');
    expect(app.contacts.list.map((c) => c.user)).toEqual(['bob']);
    for (const name of ['contacts', 'history', 'devices', 'ringtones', 'activeCalls', 'watchLive'] as const) {
      expect(backend.callsOf(name).length, name).toBeGreaterThan(0);
    }
    setLanguage('en');
  });

  test('engine events reach the stores that care', async () => {
    const backend = signedInBackend();
    const app = new HarkApp(backend, new FakeClock());
    await app.start();
    await settle();

    backend.emit({ kind: 'engine', event: { event: 'presence', user: 'bob', status: 'online' } });
    expect(app.contacts.get('bob')?.status).toBe('online');

    backend.emit({ kind: 'call', call: { event: 'incoming_call', call_id: 'c1', caller: 'carol', invitees: ['me'], media: 'audio', user_data: null } });
    expect(app.call.phase).toBe('incoming');
    // Full-screen presentation in these settings: the main window shows it.
    expect(app.callVisible).toBe(true);
    await settle();
    expect(app.people.name('carol')).toBe('CAROL');

    backend.live({ kind: 'level', user: 'carol', level: 50 });
    backend.live({ kind: 'microphone_level', level: 33 });
    expect(app.call.levels['carol']).toBe(50);
    expect(app.settings.meter).toBe(33);

    const before = backend.callsOf('history').length;
    backend.emit({ kind: 'call', call: { event: 'not_connected', call_id: 'c1', reason: 'cancelled' } });
    expect(backend.callsOf('history').length).toBe(before + 1);

    backend.emit({ kind: 'engine', event: { event: 'signaling_lost', reason: 'eof', kicked: null } });
    expect(app.session.reconnecting).toBe(true);
    backend.emit({ kind: 'engine', event: { event: 'sign_in_refused', code: 'token_expired', message: 'old' } });
    expect(app.session.status).toBe('signed_out');
    setLanguage('en');
  });

  test('sign in from the form, then sign out', async () => {
    const backend = fakeBackend();
    const app = new HarkApp(backend, new FakeClock());
    await app.start();
    expect(app.session.status).toBe('signed_out');
    expect(await app.signIn({ server: null, user: 'me', password: 'pw', register: true, nickname: 'Me', avatar: null })).toBe(true);
    expect(app.call.me).toBe('me');
    expect(backend.callsOf('signIn')[0]?.[0]).toMatchObject({ user: 'me', register: true, nickname: 'Me' });
    await app.signOut();
    expect(app.session.status).toBe('signed_out');
    expect(app.contacts.list).toEqual([]);
  });

  test('a broken shell is shown, not hidden', async () => {
    const app = new HarkApp(
      fakeBackend({
        appInfo: async () => {
          throw { code: 'unknown', message: 'Command app_info not found' };
        },
      }),
      new FakeClock(),
    );
    await app.start();
    expect(app.fatal).toBe('Command app_info not found');
  });
});

describe('a main window opened in the middle of a call', () => {
  test('replays the call and follows mutes changed elsewhere', async () => {
    const backend = fakeBackend({
      appInfo: async () => ({ version: '1.2.3', embedded_server: null, account, last_user: 'me', settings: { ...DEFAULT_SETTINGS }, policy: NO_POLICY }),
      callReplay: async () => ({
        me: 'me',
        events: [
          { event: 'dialing', call_id: 'c9', invitees: ['bob'] },
          { event: 'call_began', call_id: 'c9', media: 'audio', connected_at: Date.UTC(2026, 10, 20, 8, 59, 30) },
        ],
        mutes: { microphone: true, speaker: false },
        camera_on: true,
      }),
    });
    const app = new HarkApp(backend, new FakeClock());
    await app.start();
    await settle();
    expect(app.call.phase).toBe('connected');
    expect(app.callVisible).toBe(true);
    expect(app.call.timerText).toBe('00:30');
    expect(app.call.micMuted).toBe(true);
    expect(backend.callsOf('profiles').flat(2)).toContain('bob');
    backend.mutes({ microphone: false, speaker: true });
    expect(app.call.micMuted).toBe(false);
    expect(app.call.speakerMuted).toBe(true);
  });
});

describe('call events while the replay is on its way', () => {
  test('are held, and follow it without those it already holds', async () => {
    let answer: (value: CallReplay) => void = () => undefined;
    const backend = fakeBackend({
      appInfo: async () => ({ version: '1.2.3', embedded_server: null, account, last_user: 'me', settings: { ...DEFAULT_SETTINGS }, policy: NO_POLICY }),
      callReplay: () => new Promise<CallReplay>((resolve) => (answer = resolve)),
    });
    const app = new HarkApp(backend, new FakeClock());
    const started = app.start();
    await settle();
    const dialing: CallEvent = { event: 'dialing', call_id: 'c9', invitees: ['bob'] };
    const began: CallEvent = { event: 'call_began', call_id: 'c9', media: 'audio', connected_at: Date.UTC(2026, 10, 20, 8, 59, 30) };
    // Sent while the replay was being read: already in it, then news after it.
    backend.emit({ kind: 'call', call: began });
    backend.emit({ kind: 'call', call: { event: 'user_joined', user: 'bob' } });
    expect(app.call.phase).toBe('idle');
    answer({ me: 'me', events: [dialing, began], mutes: { microphone: false, speaker: false }, camera_on: true });
    await started;
    expect(app.call.phase).toBe('connected');
    expect(app.call.peers).toEqual([{ user: 'bob', state: 'joined' }]);
    // Live from now on.
    backend.emit({ kind: 'call', call: { event: 'call_ended', call_id: 'c9', reason: 'hangup', duration_s: 31 } });
    expect(app.call.phase).toBe('ended');
  });
});

/**
 * A started app whose shell hands out `links` (each once, as `take_link` does); `nudge()` is the
 * shell's `link` event. Signed in when `signedIn`.
 */
async function appWithLinks(links: OpenedLink[], signedIn: boolean) {
  const shell = { nudge: () => undefined as void };
  const backend = fakeBackend({
    ...(signedIn ? { appInfo: async () => ({ version: '1', embedded_server: null, account, last_user: 'me', settings: { ...DEFAULT_SETTINGS }, policy: NO_POLICY }) } : {}),
    takeLink: async () => links.shift() ?? null,
    onLink: async (handler) => {
      shell.nudge = handler;
      return () => undefined;
    },
  });
  const app = new HarkApp(backend, new FakeClock());
  await app.start();
  await settle();
  return { app, backend, nudge: () => shell.nudge() };
}

describe('hark: links', () => {
  test('a link waits for sign-in, is offered, and calls only on yes; a newer one comes by event', async () => {
    const links: OpenedLink[] = [{ kind: 'call', link: { to: ['alice', 'bob'], media: 'video' } }, { kind: 'refused', reason: 'too_many_people' }];
    const { app, backend, nudge } = await appWithLinks(links, false);
    // Signed out: the shell keeps the link until there is someone to call from.
    expect(backend.callsOf('takeLink')).toHaveLength(0);
    expect(app.link).toBeNull();
    await app.signIn({ user: 'me', password: 'pw', nickname: null, avatar: null, server: null, register: false });
    await settle();
    expect(app.link).toEqual({ kind: 'call', link: { to: ['alice', 'bob'], media: 'video' } });
    expect(backend.callsOf('placeCall')).toHaveLength(0);
    await app.acceptLink();
    expect(backend.callsOf('placeCall')).toEqual([[['alice', 'bob'], 'video']]);
    expect(app.link).toBeNull();
    backend.emit({ kind: 'call', call: { event: 'not_connected', call_id: 'c5', reason: 'cancelled' } });
    await settle();
    expect(app.call.busy).toBe(false);

    // Hark running: a second launch's link arrives as a nudge; a refusal is shown, never called.
    nudge();
    await settle();
    expect(app.link).toEqual({ kind: 'refused', reason: 'too_many_people' });
    await app.acceptLink();
    expect(backend.callsOf('placeCall')).toHaveLength(1);
    nudge();
    await settle();
    expect(app.link).toBeNull();
  });

  test('no is no', async () => {
    const backend = fakeBackend({
      appInfo: async () => ({ version: '1', embedded_server: null, account, last_user: 'me', settings: { ...DEFAULT_SETTINGS }, policy: NO_POLICY }),
      takeLink: async () => ({ kind: 'call', link: { to: ['alice'], media: 'audio' } }),
    });
    const app = new HarkApp(backend, new FakeClock());
    await app.start();
    await settle();
    expect(app.link?.kind).toBe('call');
    app.dismissLink();
    expect(app.link).toBeNull();
    expect(backend.callsOf('placeCall')).toHaveLength(0);
  });
});

describe('hark: links while something else is on screen', () => {
  test('a link during a call waits for its end; a newer link never replaces the one on screen', async () => {
    const waiting: OpenedLink[] = [];
    const { app, backend, nudge } = await appWithLinks(waiting, true);
    backend.emit({ kind: 'call', call: { event: 'incoming_call', call_id: 'c1', caller: 'carol', invitees: ['me'], media: 'audio', user_data: null } });
    waiting.push({ kind: 'call', link: { to: ['alice'], media: 'audio' } });
    nudge();
    await settle();
    expect(app.link).toBeNull(); // the call's buttons stay usable; the shell keeps the link
    expect(backend.callsOf('takeLink')).toHaveLength(1); // at sign-in only
    backend.emit({ kind: 'call', call: { event: 'not_connected', call_id: 'c1', reason: 'cancelled' } });
    await settle();
    const first = app.link;
    expect(first).toEqual({ kind: 'call', link: { to: ['alice'], media: 'audio' } });

    // A second link while the first is offered stays in the shell until the first is answered.
    waiting.push({ kind: 'call', link: { to: ['mallory'], media: 'audio' } });
    nudge();
    await settle();
    expect(app.link).toBe(first);
    app.dismissLink(first);
    await settle();
    expect(app.link).toEqual({ kind: 'call', link: { to: ['mallory'], media: 'audio' } });
    // The first dialog's late close event does not dismiss the second.
    app.dismissLink(first);
    expect(app.link?.kind).toBe('call');
    expect(backend.callsOf('placeCall')).toHaveLength(0);
  });
});

describe("the administrator's policy", () => {
  const locked = { ...NO_POLICY, file: '/etc/hark/policy.toml', video: false, problems: ['line 3: the value of `video` could not be read'] };

  test('without video, calls are placed and answered with audio only', async () => {
    const backend = fakeBackend({
      appInfo: async () => ({ version: '1', embedded_server: null, account, last_user: 'me', settings: { ...DEFAULT_SETTINGS }, policy: locked }),
    });
    const app = new HarkApp(backend, new FakeClock());
    await app.start();
    await settle();
    expect(app.policy.video).toBe(false);
    expect(app.call.videoAllowed).toBe(false);

    await app.placeCall(['bob'], 'video');
    expect(backend.callsOf('placeCall')).toEqual([[['bob'], 'audio']]);
    expect(app.call.showsVideo('me')).toBe(false);
    backend.emit({ kind: 'call', call: { event: 'not_connected', call_id: null, reason: 'cancelled' } });

    // The test call is a video call only while video is allowed.
    await app.testCall();
    expect(backend.callsOf('placeCall')[1]).toEqual([['echo'], 'audio']);
    backend.emit({ kind: 'call', call: { event: 'not_connected', call_id: null, reason: 'cancelled' } });

    backend.emit({ kind: 'call', call: { event: 'incoming_call', call_id: 'c1', caller: 'carol', invitees: ['me'], media: 'video', user_data: null } });
    await app.call.accept();
    expect(backend.callsOf('acceptCall')).toEqual([[true]]);
  });

  test('a policy with problems shows its notice until closed; without problems there is none', async () => {
    const backend = fakeBackend({ appInfo: async () => ({ ...(await fakeBackend().appInfo()), policy: locked }) });
    const app = new HarkApp(backend, new FakeClock());
    expect(app.policyNotice).toBe(false);
    await app.start();
    expect(app.policyNotice).toBe(true);
    app.dismissPolicyNotice();
    expect(app.policyNotice).toBe(false);

    const clean = new HarkApp(fakeBackend(), new FakeClock());
    await clean.start();
    expect(clean.policy).toEqual(NO_POLICY);
    expect(clean.policyNotice).toBe(false);
  });
});

describe('a problem report from the last run', () => {
  test('is offered once at start, whether signed in or not, until closed', async () => {
    const report = { at_ms: 1_764_000_000_000, summary: 'Hark 0.1.0 stopped at src/x.rs:1 (thread main)', file: '/logs/crash-1764000000.shown.txt' };
    const reports = [report];
    const backend = fakeBackend({ takeCrashReport: async () => reports.shift() ?? null });
    const app = new HarkApp(backend, new FakeClock());
    await app.start();
    await settle();
    expect(app.session.status).not.toBe('signed_in');
    expect(app.crash).toEqual(report);
    await app.openLogFolder();
    expect(backend.callsOf('openLogFolder')).toHaveLength(1);
    app.dismissCrash();
    expect(app.crash).toBeNull();
    expect(backend.callsOf('takeCrashReport')).toHaveLength(1);
  });

  test('a shell that cannot say is no report', async () => {
    const backend = fakeBackend({
      takeCrashReport: async () => {
        throw { code: 'internal', message: 'no' };
      },
    });
    const app = new HarkApp(backend, new FakeClock());
    await app.start();
    expect(app.crash).toBeNull();
    expect(app.fatal).toBeNull();
  });
});
