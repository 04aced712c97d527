// Unit tests: the call store for every engine event and command, on a fake clock.

import { beforeEach, describe, expect, test } from 'vitest';
import type { CallEvent } from '../bindings/CallEvent';
import type { CallSummary } from '../bindings/CallSummary';
import { FakeClock } from '../testing/fakeClock';
import { fakeBackend, settle, type FakeBackend } from '../testing/fakeBackend';
import { CallStore, ENDED_HOLD_MS, JOINABLE_POLL_MS, liveAfterReplay, ReplayGate, SPEAKER_HOLD_MS, SPEAKING_LEVEL } from './call.svelte';

let clock: FakeClock;
let backend: FakeBackend;
let call: CallStore;

function setUp(overrides: Parameters<typeof fakeBackend>[0] = {}) {
  clock = new FakeClock();
  backend = fakeBackend(overrides);
  call = new CallStore(backend, clock);
  call.me = 'me';
}

beforeEach(() => setUp());

const incoming: CallEvent = { event: 'incoming_call', call_id: 'c1', caller: 'alice', invitees: ['me'], media: 'video', user_data: null };

function states() {
  return Object.fromEntries(call.peers.map((p) => [p.user, p.state]));
}

describe('outgoing 1:1 call', () => {
  test('place → dialing → call_began → call_ended → idle after the hold', async () => {
    await call.place(['bob'], 'audio');
    expect(backend.callsOf('placeCall')).toEqual([[['bob'], 'audio']]);
    expect(call.phase).toBe('dialing');
    expect(call.outgoing).toBe(true);
    expect(call.callId).toBeNull();
    expect(states()).toEqual({ bob: 'ringing' });

    call.handle({ event: 'dialing', call_id: 'c1', invitees: ['bob'] });
    expect(call.phase).toBe('dialing');
    expect(call.callId).toBe('c1');

    call.handle({ event: 'user_joined', user: 'bob' });
    call.handle({ event: 'call_began', call_id: 'c1', media: 'audio', connected_at: clock.now() });
    expect(call.phase).toBe('connected');
    expect(states()).toEqual({ bob: 'joined' });
    expect(call.timerText).toBe('00:00');

    call.handle({ event: 'call_ended', call_id: 'c1', reason: 'hangup', duration_s: 42 });
    expect(call.phase).toBe('ended');
    expect(call.end).toEqual({ kind: 'ended', reason: 'hangup', durationS: 42 });
    expect(call.endedFrom).toBe('connected');
    expect(call.timerText).toBe('00:42');

    clock.advance(ENDED_HOLD_MS - 1);
    expect(call.phase).toBe('ended');
    clock.advance(1);
    expect(call.phase).toBe('idle');
    expect(call.peers).toEqual([]);
    expect(call.callId).toBeNull();
    expect(clock.pending).toBe(0);
  });

  test('the dialing event may come before the command resolves', () => {
    call.handle({ event: 'dialing', call_id: 'c9', invitees: ['bob', 'carol'] });
    expect(call.phase).toBe('dialing');
    expect(call.outgoing).toBe(true);
    expect(call.caller).toBe('me');
    expect(states()).toEqual({ bob: 'ringing', carol: 'ringing' });
  });

  test.each([
    ['rejected', 'user_rejected'],
    ['busy', 'user_busy'],
    ['no_answer', 'user_no_response'],
  ] as const)('not connected: %s', async (reason, peerEvent) => {
    await call.place(['bob'], 'audio');
    call.handle({ event: 'dialing', call_id: 'c1', invitees: ['bob'] });
    call.handle({ event: peerEvent, user: 'bob' } as CallEvent);
    expect(states()).toEqual({ bob: reason });
    call.handle({ event: 'not_connected', call_id: 'c1', reason });
    expect(call.phase).toBe('ended');
    expect(call.end).toEqual({ kind: 'not_connected', reason });
    expect(call.timerText).toBe('');
    clock.advance(ENDED_HOLD_MS);
    expect(call.phase).toBe('idle');
  });

  test('a refused command ends the attempt with its code', async () => {
    setUp({
      placeCall: async () => {
        throw { code: 'not_signed_in', message: 'sign in first' };
      },
    });
    await call.place(['bob'], 'audio');
    expect(call.phase).toBe('ended');
    expect(call.end).toEqual({ kind: 'refused', code: 'not_signed_in' });
    expect(call.error?.code).toBe('not_signed_in');
  });

  test('a server error before not_connected(failed) is kept for the status line', async () => {
    await call.place(['nobody'], 'audio');
    call.handle({ event: 'error', code: 'not_found', message: 'no such user' });
    call.handle({ event: 'not_connected', call_id: null, reason: 'failed' });
    expect(call.phase).toBe('ended');
    expect(call.error).toEqual({ code: 'not_found', message: 'no such user' });
    expect(call.end).toEqual({ kind: 'not_connected', reason: 'failed' });
  });

  test('placing is ignored while a call is going on, and with nobody to call', async () => {
    await call.place([], 'audio');
    expect(call.phase).toBe('idle');
    call.handle(incoming);
    await call.place(['bob'], 'audio');
    expect(backend.callsOf('placeCall')).toEqual([]);
    expect(call.phase).toBe('incoming');
  });

  test('hang up asks the engine; its wrong_state means the call is already over', async () => {
    setUp({
      hangUp: async () => {
        throw { code: 'wrong_state', message: 'no call' };
      },
    });
    await call.place(['bob'], 'audio');
    await call.hangUp();
    expect(backend.callsOf('hangUp')).toHaveLength(1);
    expect(call.phase).toBe('ended');
  });
});

describe('timer', () => {
  test('runs from the server connect time on a fake clock', () => {
    const start = clock.now();
    call.handle({ event: 'dialing', call_id: 'c1', invitees: ['bob'] });
    // The server connected the call 3 s before we heard.
    call.handle({ event: 'call_began', call_id: 'c1', media: 'audio', connected_at: start - 3000 });
    expect(call.timerText).toBe('00:03');
    clock.advance(1000);
    expect(call.timerText).toBe('00:04');
    clock.advance(60_000);
    expect(call.timerText).toBe('01:04');
    clock.advance(3600_000);
    expect(call.timerText).toBe('1:01:04');
  });

  test('falls back to our own clock without a connect time, and never runs negative', () => {
    call.handle({ event: 'call_began', call_id: 'c1', media: 'audio', connected_at: null });
    expect(call.connectedAt).toBe(clock.now());
    clock.advance(2500);
    expect(call.timerText).toBe('00:02');
    call.handle({ event: 'call_ended', call_id: 'c1', reason: 'hangup', duration_s: 2 });
    clock.advance(ENDED_HOLD_MS);
    call.handle({ event: 'call_began', call_id: 'c2', media: 'audio', connected_at: clock.now() + 5000 });
    expect(call.timerText).toBe('00:00');
  });

  test('stops ticking when the call ends', () => {
    call.handle({ event: 'call_began', call_id: 'c1', media: 'audio', connected_at: clock.now() });
    expect(clock.pending).toBe(1);
    call.handle({ event: 'call_ended', call_id: 'c1', reason: 'hangup', duration_s: 1 });
    expect(clock.pending).toBe(1); // only the hold
    clock.advance(ENDED_HOLD_MS);
    expect(clock.pending).toBe(0);
  });
});

describe('incoming call', () => {
  test('incoming → accept → connected', async () => {
    call.handle(incoming);
    expect(call.phase).toBe('incoming');
    expect(call.caller).toBe('alice');
    expect(call.media).toBe('video');
    expect(call.outgoing).toBe(false);
    expect(states()).toEqual({ alice: 'joined' });

    await call.accept();
    expect(backend.callsOf('acceptCall')).toHaveLength(1);
    expect(call.joining).toBe(true);
    call.handle({ event: 'user_joined', user: 'alice' });
    call.handle({ event: 'call_began', call_id: 'c1', media: 'video', connected_at: clock.now() });
    expect(call.phase).toBe('connected');
    expect(call.joining).toBe(false);
  });

  test('a group invitation lists the other invitees as ringing, never ourselves', () => {
    call.handle({ ...incoming, invitees: ['me', 'bob', 'carol'] } as CallEvent);
    expect(states()).toEqual({ alice: 'joined', bob: 'ringing', carol: 'ringing' });
    expect(call.isGroup).toBe(true);
  });

  test('cancelled by the caller', () => {
    call.handle(incoming);
    call.handle({ event: 'not_connected', call_id: 'c1', reason: 'cancelled' });
    expect(call.phase).toBe('ended');
    expect(call.endedFrom).toBe('incoming');
  });

  test('reject ends it here even if the engine says no more', async () => {
    call.handle(incoming);
    await call.reject();
    expect(backend.callsOf('rejectCall')).toHaveLength(1);
    expect(call.end).toEqual({ kind: 'not_connected', reason: 'rejected' });
  });

  test('a failed accept goes back to ringing with the error', async () => {
    setUp({
      acceptCall: async () => {
        throw { code: 'invalid_state', message: 'gone' };
      },
    });
    call.handle(incoming);
    await call.accept();
    expect(call.phase).toBe('incoming');
    expect(call.joining).toBe(false);
    expect(call.error?.code).toBe('invalid_state');
  });

  test('a second invitation does not replace the call going on', () => {
    call.handle({ event: 'call_began', call_id: 'c0', media: 'audio', connected_at: clock.now() });
    call.handle(incoming);
    expect(call.phase).toBe('connected');
    expect(call.callId).toBe('c0');
  });

  test('a new invitation during the ended hold replaces it and cancels the hold', () => {
    call.handle({ event: 'call_began', call_id: 'c0', media: 'audio', connected_at: clock.now() });
    call.handle({ event: 'call_ended', call_id: 'c0', reason: 'hangup', duration_s: 5 });
    call.handle(incoming);
    expect(call.phase).toBe('incoming');
    clock.advance(ENDED_HOLD_MS);
    expect(call.phase).toBe('incoming');
  });
});

describe('events about people and media', () => {
  beforeEach(() => {
    call.handle({ event: 'dialing', call_id: 'c1', invitees: ['bob', 'carol'] });
    call.handle({ event: 'user_joined', user: 'bob' });
    call.handle({ event: 'call_began', call_id: 'c1', media: 'video', connected_at: clock.now() });
  });

  test('left, rejected, invited, and a repeated invitation keeps a joined person joined', () => {
    call.handle({ event: 'user_rejected', user: 'carol' });
    call.handle({ event: 'users_invited', users: ['dave', 'bob'] });
    expect(states()).toEqual({ bob: 'joined', carol: 'rejected', dave: 'ringing' });
    expect(call.present.map((p) => p.user)).toEqual(['bob', 'dave']);
    call.handle({ event: 'user_joined', user: 'dave' });
    call.handle({ event: 'user_left', user: 'bob' });
    expect(states()).toEqual({ bob: 'left', carol: 'rejected', dave: 'joined' });
  });

  test('media_changed and error', () => {
    call.handle({ event: 'media_changed', media: 'audio' });
    expect(call.media).toBe('audio');
    call.handle({ event: 'error', code: 'rate_limited', message: 'slow down' });
    expect(call.error).toEqual({ code: 'rate_limited', message: 'slow down' });
    expect(call.phase).toBe('connected');
  });

  test('events about another call are ignored', () => {
    call.handle({ event: 'call_ended', call_id: 'other', reason: 'hangup', duration_s: 1 });
    call.handle({ event: 'not_connected', call_id: 'other', reason: 'busy' });
    expect(call.phase).toBe('connected');
  });

  test('levels and weak badges from the live channel and from engine events', () => {
    call.live({ kind: 'level', user: 'bob', level: 40 });
    call.live({ kind: 'level', user: 'me', level: 3 });
    call.live({ kind: 'quality', user: 'bob', loss_percent: 12, rtt_ms: 80, jitter_ms: 4, relayed: false, weak: true, r_factor: 61.2, mos: 3.16 });
    expect(call.isSpeaking('bob')).toBe(true);
    expect(call.quality['bob']).toEqual({ loss_percent: 12, rtt_ms: 80, jitter_ms: 4, r_factor: 61.2, mos: 3.16 });
    expect(call.isSpeaking('me')).toBe(false);
    expect(call.weak['bob']).toBe(true);
    call.voiceLevel('bob', 0);
    call.networkQuality('bob', true);
    expect(call.isSpeaking('bob')).toBe(false);
    expect(call.weak['bob']).toBe(true);
    call.networkQuality('bob', false);
    expect(call.weak['bob']).toBe(false);
    call.live({ kind: 'quality', user: 'bob', loss_percent: 30, rtt_ms: null, jitter_ms: null, relayed: true, weak: true, r_factor: 30, mos: 1.6 });
    call.live({ kind: 'level', user: 'bob', level: 90 });
    call.handle({ event: 'call_ended', call_id: 'c1', reason: 'hangup', duration_s: 9 });
    expect(call.weak).toEqual({});
    expect(call.quality, 'no score outlives its call').toEqual({});
    expect(call.isSpeaking('bob')).toBe(false);
  });

  test('the speaker: the other person heard last, held a moment before another takes over', () => {
    call.handle({ event: 'user_joined', user: 'carol' });
    expect(call.speaker).toBeNull();
    call.live({ kind: 'level', user: 'me', level: 80 });
    call.live({ kind: 'level', user: 'dave', level: 80 });
    expect(call.speaker).toBeNull(); // ourselves, and someone not in the call
    call.live({ kind: 'level', user: 'bob', level: SPEAKING_LEVEL - 1 });
    expect(call.speaker).toBeNull(); // too quiet to count
    call.live({ kind: 'level', user: 'bob', level: 40 });
    expect(call.speaker).toBe('bob');
    call.live({ kind: 'level', user: 'bob', level: 0 });
    expect(call.speaker).toBe('bob'); // kept through silence
    clock.advance(SPEAKER_HOLD_MS - 1);
    call.live({ kind: 'level', user: 'carol', level: 50 });
    expect(call.speaker).toBe('bob'); // held
    clock.advance(1);
    call.voiceLevel('carol', 50);
    expect(call.speaker).toBe('carol');
    // Both talking at once for a long while: the one shown keeps the place.
    for (let tick = 0; tick < 50; tick += 1) {
      clock.advance(100);
      call.voiceLevel('bob', 60);
      call.voiceLevel('carol', 60);
    }
    expect(call.speaker).toBe('carol');
    call.handle({ event: 'call_ended', call_id: 'c1', reason: 'hangup', duration_s: 9 });
    expect(call.speaker).toBeNull();
  });

  test('invite sends only people not in the call yet', async () => {
    expect(await call.invite(['bob', 'me', 'erin'])).toBe(true);
    expect(backend.callsOf('inviteMore')).toEqual([[['erin']]]);
    expect(await call.invite(['bob'])).toBe(false);
  });
});

describe('mute', () => {
  test('toggles optimistically and reverts when refused', async () => {
    call.handle({ event: 'call_began', call_id: 'c1', media: 'audio', connected_at: clock.now() });
    await call.toggleMicrophone();
    expect(call.micMuted).toBe(true);
    expect(backend.callsOf('muteMicrophone')).toEqual([[true]]);
    await call.toggleSpeaker();
    expect(call.speakerMuted).toBe(true);

    setUp({
      muteMicrophone: async () => {
        throw { code: 'engine_stopped', message: 'x' };
      },
    });
    await call.toggleMicrophone();
    expect(call.micMuted).toBe(false);
    expect(call.error?.code).toBe('engine_stopped');
  });

  test('a new call starts unmuted; the engine lifts its own mutes, the view does not ask it to', async () => {
    call.handle({ event: 'call_began', call_id: 'c1', media: 'audio', connected_at: clock.now() });
    await call.toggleMicrophone();
    call.handle({ event: 'call_ended', call_id: 'c1', reason: 'hangup', duration_s: 1 });
    clock.advance(ENDED_HOLD_MS);
    expect(call.micMuted).toBe(false);
    expect(backend.callsOf('muteMicrophone')).toEqual([[true]]);
  });
});

describe('where the call shows', () => {
  test('main window shows an incoming call only full screen', () => {
    expect(call.showsCallView(false)).toBe(false);
    call.handle(incoming);
    expect(call.showsCallView(false)).toBe(false);
    expect(call.showsCallView(true)).toBe(true);
    call.handle({ event: 'not_connected', call_id: 'c1', reason: 'cancelled' });
    expect(call.showsCallView(false)).toBe(false);
    expect(call.showsCallView(true)).toBe(true);
  });

  test('dialing, connected and their end show in any presentation', async () => {
    await call.place(['bob'], 'audio');
    expect(call.showsCallView(false)).toBe(true);
    call.handle({ event: 'call_began', call_id: 'c1', media: 'audio', connected_at: clock.now() });
    expect(call.showsCallView(false)).toBe(true);
    call.handle({ event: 'call_ended', call_id: 'c1', reason: 'hangup', duration_s: 1 });
    expect(call.showsCallView(false)).toBe(true);
  });

  test('an accepted incoming call that then fails still shows its end', async () => {
    call.handle(incoming);
    await call.accept();
    call.handle({ event: 'not_connected', call_id: 'c1', reason: 'failed' });
    expect(call.endedFrom).toBe('dialing');
    expect(call.showsCallView(false)).toBe(true);
  });
});

describe('joinable calls', () => {
  const summary: CallSummary = {
    call_id: 'g1',
    caller: 'alice',
    invitees: ['me', 'bob'],
    media: 'audio',
    joined: ['alice', 'bob'],
    connected_at: 1,
    user_data: null,
  };

  test('lists calls with people in them that we are not in, and polls while idle', async () => {
    let answer: CallSummary[] = [summary, { ...summary, call_id: 'g2', joined: [] }, { ...summary, call_id: 'g3', joined: ['me', 'bob'] }];
    setUp({ activeCalls: async () => answer });
    await call.refreshJoinable();
    expect(call.joinable.map((c) => c.call_id)).toEqual(['g1']);

    answer = [];
    call.watchJoinable();
    clock.advance(JOINABLE_POLL_MS);
    await settle();
    expect(call.joinable).toEqual([]);
    call.stop();
    expect(clock.pending).toBe(0);
  });

  test('join shows the call as joining until call_began', async () => {
    await call.join(summary, 'audio');
    expect(backend.callsOf('joinCall')).toEqual([['g1', 'audio']]);
    expect(call.phase).toBe('dialing');
    expect(call.joining).toBe(true);
    expect(states()).toEqual({ alice: 'joined', bob: 'joined' });
    call.handle({ event: 'call_began', call_id: 'g1', media: 'audio', connected_at: 1 });
    expect(call.phase).toBe('connected');
  });

  test('a refused join ends with the code', async () => {
    setUp({
      joinCall: async () => {
        throw { code: 'too_many_participants', message: 'full' };
      },
    });
    await call.join(summary, 'audio');
    expect(call.end).toEqual({ kind: 'refused', code: 'too_many_participants' });
  });
});

describe('catching up with a call that began before the window listened', () => {
  const began: CallEvent = { event: 'call_began', call_id: 'c1', media: 'video', connected_at: 5_000 };

  test('the replayed events rebuild the call, the mutes included', () => {
    setUp();
    call.me = '';
    // Connected a minute before this window opened.
    const connectedAt = clock.now() - 60_000;
    call.replay({ me: 'me', events: [incoming, { ...began, connected_at: connectedAt }], mutes: { microphone: true, speaker: false }, camera_on: true });
    expect(call.phase).toBe('connected');
    expect(call.callId).toBe('c1');
    // We are among the invitees: never a tile of our own.
    expect(states()).toEqual({ alice: 'joined' });
    expect(call.connectedAt).toBe(connectedAt);
    expect(call.timerText).toBe('01:00');
    expect(call.micMuted).toBe(true);
    expect(call.speakerMuted).toBe(false);
  });

  test('the gate holds live events until the replay is in, then follows the rest and everything after at once', () => {
    const joined: CallEvent = { event: 'user_joined', user: 'carol' };
    const left: CallEvent = { event: 'user_left', user: 'carol' };
    const followed: CallEvent[] = [];
    const gate = new ReplayGate((event) => followed.push(event));
    gate.push(began);
    gate.push(joined);
    expect(followed).toEqual([]);
    // The replay already holds `began`.
    gate.open([incoming, began]);
    expect(followed).toEqual([joined]);
    gate.push(left);
    expect(followed).toEqual([joined, left]);
  });

  test('live events that came while the replay was on its way: only those it does not hold follow', () => {
    const joined: CallEvent = { event: 'user_joined', user: 'carol' };
    const ended: CallEvent = { event: 'call_ended', call_id: 'c1', reason: 'hangup', duration_s: 3 };
    // The replay already holds the first live event.
    expect(liveAfterReplay([incoming, began], [began, joined])).toEqual([joined]);
    expect(liveAfterReplay([incoming, began, joined], [began, joined])).toEqual([]);
    // Nothing in common: all follow, in order.
    expect(liveAfterReplay([incoming], [began, joined])).toEqual([began, joined]);
    // The call ended before the replay was taken: only the end follows, and a window that
    // applies it after the (empty) replay stays idle.
    expect(liveAfterReplay([], [ended])).toEqual([ended]);
    call.replay({ me: 'me', events: [], mutes: { microphone: false, speaker: false }, camera_on: true });
    for (const event of liveAfterReplay([], [ended])) call.handle(event);
    expect(call.phase).toBe('idle');
  });

  test('nothing to replay leaves the window idle and unmuted', () => {
    call.replay({ me: 'me', events: [], mutes: { microphone: true, speaker: true }, camera_on: true });
    expect(call.phase).toBe('idle');
    expect(call.micMuted).toBe(false);
  });

  test('mutes changed in another window are shown here', () => {
    call.handle(incoming);
    call.handle(began);
    call.applyMutes({ microphone: false, speaker: true });
    expect(call.speakerMuted).toBe(true);
    expect(backend.callsOf('muteSpeaker')).toEqual([]);
  });
});

describe('video', () => {
  test('who shows video: our camera, and each person unless their video stopped, in a video call only', async () => {
    await call.place(['bob'], 'video');
    call.handle({ event: 'dialing', call_id: 'c1', invitees: ['bob'] });
    expect(call.showsVideo('me')).toBe(true);
    // Not known yet: the tile is ready (it keeps the avatar until a picture comes).
    expect(call.showsVideo('bob')).toBe(true);
    call.video({ event: 'remote_video_unavailable', user: 'bob' });
    expect(call.showsVideo('bob')).toBe(false);
    call.handle({ event: 'call_began', call_id: 'c1', media: 'video', connected_at: clock.now() });
    call.video({ event: 'first_remote_video_frame', user: 'bob' });
    expect(call.showsVideo('bob')).toBe(true);
    call.video({ event: 'remote_video_frozen', user: 'bob' });
    expect(call.frozen.bob).toBe(true);
    call.video({ event: 'remote_video_recovered', user: 'bob', frozen_ms: 300, after_request_ms: 120 });
    expect(call.frozen.bob).toBe(false);
    // Their camera off: their picture goes at once.
    call.handle({ event: 'remote_camera', user: 'bob', on: false });
    expect(call.showsVideo('bob')).toBe(false);
    call.video({ event: 'remote_video_available', user: 'bob' });
    expect(call.showsVideo('bob')).toBe(true);
    // Down to audio: nobody's video shows.
    call.handle({ event: 'media_changed', media: 'audio' });
    expect(call.showsVideo('me') || call.showsVideo('bob')).toBe(false);
  });

  test('the camera button follows the engine, and a refusal puts it back', async () => {
    await call.place(['bob'], 'video');
    await call.toggleCamera();
    expect(backend.callsOf('setCamera')).toEqual([[false]]);
    expect(call.cameraOn).toBe(false);
    call.video({ event: 'camera', on: true });
    expect(call.cameraOn).toBe(true);
    call.video({ event: 'camera_error', message: 'Device or resource busy' });
    expect(call.cameraError).toBe('Device or resource busy');
    call.video({ event: 'camera_started', camera: '/dev/video0' });
    expect(call.cameraError).toBeNull();

    setUp({ setCamera: async () => Promise.reject({ code: 'not_signed_in', message: 'no' }) });
    await call.place(['bob'], 'video');
    await call.toggleCamera();
    expect(call.cameraOn).toBe(true);
    expect(call.error?.code).toBe('not_signed_in');
  });

  test('switch to audio once the call has an id; answer with audio only', async () => {
    await call.place(['bob'], 'video');
    await call.switchToAudio();
    // No call id yet: nothing to switch.
    expect(backend.callsOf('audioOnly')).toEqual([]);
    call.handle({ event: 'dialing', call_id: 'c1', invitees: ['bob'] });
    await call.switchToAudio();
    expect(backend.callsOf('audioOnly')).toHaveLength(1);

    setUp();
    call.handle(incoming);
    await call.accept(true);
    expect(backend.callsOf('acceptCall')).toEqual([[true]]);
  });
});
