// The call view model: reduces the engine's call events (and our own commands) to what the call
// view shows: a phase, the people and how each is doing, levels, weak-network badges, the timer
// and why the call ended.
//
// Phases: idle → incoming | dialing → connected → ended → (after ENDED_HOLD_MS) idle. `dialing`
// also covers "we accepted or asked to join, waiting for the server" (`joining`). The engine's
// core is the authority; this store only mirrors it, and optimistic changes made by a command
// (showing "Calling…" before the server named the call) are corrected by the events that follow.
// Time comes from an injected `Clock`, so tests step it instead of sleeping.

import type { ApiCode } from '../bindings/ApiCode';
import type { ApiError } from '../bindings/ApiError';
import type { CallEvent } from '../bindings/CallEvent';
import type { CallReplay } from '../bindings/CallReplay';
import type { CallSummary } from '../bindings/CallSummary';
import type { EndReason } from '../bindings/EndReason';
import type { LiveUpdate } from '../bindings/LiveUpdate';
import type { Media } from '../bindings/Media';
import type { MediaLinkState } from '../bindings/MediaLinkState';
import type { LinkQuality } from '../quality';
import type { Mutes } from '../bindings/Mutes';
import type { NotConnectedReason } from '../bindings/NotConnectedReason';
import type { Backend } from '../backend';
import type { OtherEngineEvent } from '../events';
import type { Clock, TimerId } from '../clock';
import { toApiError } from '../errors';
import { elapsedSeconds, formatDuration } from '../format';

export type CallPhase = 'idle' | 'incoming' | 'dialing' | 'connected' | 'ended';
export type PeerState = 'ringing' | 'joined' | 'left' | 'rejected' | 'busy' | 'no_answer';

export interface Peer {
  user: string;
  state: PeerState;
}

export type CallEnd =
  /** A connected call ended. */
  | { kind: 'ended'; reason: EndReason; durationS: number }
  /** The call ended before it connected for us. */
  | { kind: 'not_connected'; reason: NotConnectedReason }
  /** Our command was refused before there was a call. */
  | { kind: 'refused'; code: ApiCode };

/** How long "Call ended" stays on screen. */
export const ENDED_HOLD_MS = 3000;
/** The timer's step. */
export const TICK_MS = 1000;
/** How often the "people are in a call — Join" bar is refreshed while idle (there is no event). */
export const JOINABLE_POLL_MS = 15_000;
/** A level (0–100) above which a person counts as speaking. */
export const SPEAKING_LEVEL = 12;
/** How long the one person shown as "speaking" stays before another who speaks takes over. */
export const SPEAKER_HOLD_MS = 1500;

export type CallBackend = Pick<
  Backend,
  | 'placeCall'
  | 'acceptCall'
  | 'rejectCall'
  | 'hangUp'
  | 'inviteMore'
  | 'joinCall'
  | 'activeCalls'
  | 'muteMicrophone'
  | 'muteSpeaker'
  | 'setCamera'
  | 'audioOnly'
>;

/**
 * The live call events to apply after a replay: those that arrived while it was on its way, less
 * the ones it already holds (the longest run that ends the replay and starts the live list).
 * Applying an event twice is not harmless (a second `dialing` restarts the call's view), and
 * applying a live end before the replay would bring an ended call back.
 */
export function liveAfterReplay(replayed: readonly CallEvent[], live: readonly CallEvent[]): CallEvent[] {
  const key = (event: CallEvent) => JSON.stringify(event);
  for (let overlap = Math.min(replayed.length, live.length); overlap > 0; overlap--) {
    const tail = replayed.slice(replayed.length - overlap).map(key);
    if (tail.every((k, i) => k === key(live[i]))) return live.slice(overlap);
  }
  return [...live];
}

/**
 * Holds live call events back until a call in progress has been replayed (a window that opened
 * mid-call), then follows what the replay does not already hold (`liveAfterReplay`), in order,
 * and every later event at once. The main window and the mini window each keep one.
 */
export class ReplayGate {
  private held: CallEvent[] | null = [];

  constructor(private readonly follow: (event: CallEvent) => void) {}

  /** A live call event: followed now, or held while the replay is on its way. */
  push(event: CallEvent): void {
    if (this.held) this.held.push(event);
    else this.follow(event);
  }

  /** The replay is in (its events; none when it failed): the gate opens. */
  open(replayed: readonly CallEvent[]): void {
    const held = this.held ?? [];
    this.held = null;
    for (const event of liveAfterReplay(replayed, held)) this.follow(event);
  }
}

export class CallStore {
  phase = $state<CallPhase>('idle');
  callId = $state<string | null>(null);
  /** We placed the call. */
  outgoing = $state(false);
  caller = $state<string | null>(null);
  media = $state<Media>('audio');
  /** The other people, in the order they came up. */
  peers = $state<Peer[]>([]);
  /** We accepted or asked to join and wait for the server. */
  joining = $state(false);
  /** When the call connected (Unix ms; the server's time when it told us). */
  connectedAt = $state<number | null>(null);
  end = $state<CallEnd | null>(null);
  /** The phase the call was in when it ended (`joining` counts as `dialing`). */
  endedFrom = $state<CallPhase>('idle');
  micMuted = $state(false);
  speakerMuted = $state(false);
  /** Our camera (the engine's word; it keeps it from call to call). */
  cameraOn = $state(true);
  /** Our camera failed (busy, unplugged): the engine's words, shown on our tile. */
  cameraError = $state<string | null>(null);
  /** Whose video flows now. */
  videoOf = $state<Record<string, boolean>>({});
  /** Whose picture is held by a loss (a keyframe was asked for). */
  frozen = $state<Record<string, boolean>>({});
  /** Speaking level per user (our own user id for us). */
  levels = $state<Record<string, number>>({});
  /**
   * The other person heard last, for a view with room for one (the mini window): kept through
   * silence, and kept while they speak; another who speaks takes over once they have been quiet
   * for `SPEAKER_HOLD_MS`, so a cough or two people talking at once do not flip it back and forth.
   */
  speaker = $state<string | null>(null);
  private speakerSince = 0;
  /** Weak-network badge per user. */
  weak = $state<Record<string, boolean>>({});
  /** Each person's call-quality score and what it came from (the engine's E-model). */
  quality = $state<Record<string, LinkQuality>>({});
  /** Whether each person's media arrives, or is being recovered, or lost (the engine's `media_link`). */
  links = $state<Record<string, MediaLinkState>>({});
  /** The last error the engine or a command reported. */
  error = $state<ApiError | null>(null);
  /** Calls we could join. */
  joinable = $state<CallSummary[]>([]);
  /** The clock's time at the last tick. */
  now = $state(0);
  /** Who we are (set on sign-in). */
  me = $state('');
  /** The administrator's policy allows video (set from `app_info`): without it, no camera and
   *  no pictures, and a video call is answered with audio. */
  videoAllowed = $state(true);

  /** Seconds on the timer: running while connected, the server's duration once ended. */
  elapsedS = $derived.by((): number | null => {
    if (this.phase === 'connected' && this.connectedAt !== null) return elapsedSeconds(this.connectedAt, this.now);
    if (this.phase === 'ended' && this.end?.kind === 'ended') return this.end.durationS;
    return null;
  });
  timerText = $derived(this.elapsedS === null ? '' : formatDuration(this.elapsedS));
  /** Everyone in the call now or still invited, for the tiles (not those who declined or left). */
  present = $derived(this.peers.filter((p) => p.state === 'joined' || p.state === 'ringing'));
  isGroup = $derived(this.peers.length > 1);

  private tick: TimerId | null = null;
  private hold: TimerId | null = null;
  private poll: TimerId | null = null;

  constructor(
    private readonly backend: CallBackend,
    private readonly clock: Clock,
  ) {
    this.now = clock.now();
  }

  /** A call is ringing, being placed or going on (a new one cannot start). */
  get busy(): boolean {
    return this.phase === 'incoming' || this.phase === 'dialing' || this.phase === 'connected';
  }

  /** Whether the main window shows the call view (an incoming call shows there only full screen). */
  showsCallView(fullScreenIncoming: boolean): boolean {
    switch (this.phase) {
      case 'dialing':
      case 'connected':
        return true;
      case 'incoming':
        return fullScreenIncoming || this.joining;
      case 'ended':
        return this.endedFrom !== 'incoming' || fullScreenIncoming;
      case 'idle':
        return false;
    }
  }

  isSpeaking(user: string): boolean {
    return (this.levels[user] ?? 0) >= SPEAKING_LEVEL;
  }

  // ---- events ----

  handle(event: CallEvent): void {
    switch (event.event) {
      case 'incoming_call':
        // The core answers a second call "busy" by itself; never let it replace the one shown.
        if (this.busy) return;
        this.begin();
        this.phase = 'incoming';
        this.callId = event.call_id;
        this.caller = event.caller;
        this.media = event.media;
        this.setPeer(event.caller, 'joined');
        for (const user of event.invitees) this.setPeer(user, 'ringing');
        return;
      case 'dialing':
        if (!(this.phase === 'dialing' && this.outgoing)) {
          this.begin();
          this.phase = 'dialing';
          this.outgoing = true;
          this.caller = this.me;
        }
        this.callId = event.call_id;
        for (const user of event.invitees) this.setPeer(user, 'ringing', { keep: true });
        return;
      case 'call_began':
        if (!this.matches(event.call_id)) return;
        this.callId = event.call_id;
        this.phase = 'connected';
        this.joining = false;
        this.media = event.media;
        this.now = this.clock.now();
        this.connectedAt = event.connected_at ?? this.now;
        this.startTicking();
        return;
      case 'call_ended':
        if (!this.matches(event.call_id) || !this.busy) return;
        this.finish({ kind: 'ended', reason: event.reason, durationS: event.duration_s });
        return;
      case 'not_connected':
        if ((event.call_id !== null && !this.matches(event.call_id)) || !this.busy) return;
        this.finish({ kind: 'not_connected', reason: event.reason });
        return;
      case 'user_joined':
        this.setPeer(event.user, 'joined');
        return;
      case 'user_left':
        this.setPeer(event.user, 'left');
        return;
      case 'user_rejected':
        this.setPeer(event.user, 'rejected');
        return;
      case 'user_busy':
        this.setPeer(event.user, 'busy');
        return;
      case 'user_no_response':
        this.setPeer(event.user, 'no_answer');
        return;
      case 'users_invited':
        for (const user of event.users) this.setPeer(user, 'ringing', { keep: true });
        return;
      case 'media_changed':
        this.media = event.media;
        return;
      case 'remote_camera':
        // Their picture stops at once; `remote_video_available` says when it flows again.
        if (!event.on) this.videoOf[event.user] = false;
        return;
      case 'error':
        this.error = { code: event.code, message: event.message };
        return;
    }
  }

  /** Levels and network quality from the live channel. */
  live(update: LiveUpdate): void {
    if (update.kind === 'level') this.voiceLevel(update.user, update.level);
    else if (update.kind === 'quality') this.networkQuality(update.user, update.weak, update);
  }

  /** The engine's own level event (when levels come on the event stream instead of the channel). */
  voiceLevel(user: string, level: number): void {
    this.levels[user] = level;
    // Only the others in the call: our own level comes too, under our user id.
    if (level < SPEAKING_LEVEL || !this.peers.some((p) => p.user === user && p.state === 'joined')) return;
    const now = this.clock.now();
    // The one shown still speaking keeps the place: another takes it only after they paused
    // for the hold.
    if (this.speaker === null || user === this.speaker || now - this.speakerSince >= SPEAKER_HOLD_MS) {
      this.speaker = user;
      this.speakerSince = now;
    }
  }

  /** The engine's video events: our camera, and each person's video flowing, stopping or frozen. */
  video(event: OtherEngineEvent): void {
    switch (event.event) {
      case 'camera':
        this.cameraOn = event.on;
        if (event.on) this.cameraError = null;
        return;
      case 'camera_started':
        this.cameraError = null;
        return;
      case 'camera_error':
        this.cameraError = event.message;
        return;
      case 'first_remote_video_frame':
      case 'remote_video_available':
        this.videoOf[event.user] = true;
        this.frozen[event.user] = false;
        return;
      case 'remote_video_unavailable':
        this.videoOf[event.user] = false;
        this.frozen[event.user] = false;
        return;
      case 'remote_video_frozen':
        this.frozen[event.user] = true;
        return;
      case 'remote_video_recovered':
        this.frozen[event.user] = false;
        return;
      default:
        return;
    }
  }

  /**
   * Whether `user`'s tile shows video (ourselves: our camera; others: unless their video stopped).
   * Not known yet counts as shown: a window opened mid-call did not hear that it started, and a
   * tile keeps the avatar until a picture actually comes.
   */
  showsVideo(user: string): boolean {
    if (this.media !== 'video' || !this.videoAllowed) return false;
    return user === this.me ? this.cameraOn : (this.videoOf[user] ?? true);
  }

  /** The engine's network-quality event: whether the link is weak is the engine's word, and so
   *  is the score. */
  networkQuality(user: string, weak: boolean, quality?: LinkQuality): void {
    this.weak[user] = weak;
    if (quality) {
      const { loss_percent, rtt_ms, jitter_ms, r_factor, mos } = quality;
      this.quality[user] = { loss_percent, rtt_ms, jitter_ms, r_factor, mos };
    }
  }

  /** The engine's watchdog: media from `user` stopped arriving, or came back. */
  mediaLink(user: string, state: MediaLinkState): void {
    this.links[user] = state;
  }

  // ---- commands ----

  async place(to: string[], media: Media): Promise<void> {
    if (this.busy || to.length === 0) return;
    this.begin();
    this.phase = 'dialing';
    this.outgoing = true;
    this.caller = this.me;
    this.media = media;
    for (const user of to) this.setPeer(user, 'ringing');
    try {
      await this.backend.placeCall(to, media);
    } catch (thrown) {
      this.refused(toApiError(thrown));
    }
  }

  /**
   * Answers; `audioOnly` answers a video call with audio (our camera never opens), as every
   * answer to one is while the policy turns video off.
   */
  async accept(audioOnly = false): Promise<void> {
    if (this.phase !== 'incoming') return;
    this.joining = true;
    try {
      await this.backend.acceptCall(audioOnly || (!this.videoAllowed && this.media === 'video'));
    } catch (thrown) {
      this.joining = false;
      this.error = toApiError(thrown);
    }
  }

  async reject(): Promise<void> {
    if (this.phase !== 'incoming') return;
    try {
      await this.backend.rejectCall();
      // The engine may say nothing more about a call we declined ourselves.
      if (this.phase === 'incoming') this.finish({ kind: 'not_connected', reason: 'rejected' });
    } catch (thrown) {
      this.error = toApiError(thrown);
    }
  }

  async hangUp(): Promise<void> {
    if (!this.busy) return;
    try {
      await this.backend.hangUp();
    } catch (thrown) {
      const error = toApiError(thrown);
      // The call is already over in the engine: stop showing it.
      if (error.code === 'wrong_state') this.finish({ kind: 'not_connected', reason: 'cancelled' });
      else this.error = error;
    }
  }

  async invite(users: string[]): Promise<boolean> {
    const fresh = users.filter((u) => u !== this.me && !this.present.some((p) => p.user === u));
    if (fresh.length === 0 || this.phase !== 'connected') return false;
    try {
      await this.backend.inviteMore(fresh);
      return true;
    } catch (thrown) {
      this.error = toApiError(thrown);
      return false;
    }
  }

  async join(summary: CallSummary, media: Media): Promise<void> {
    if (this.busy) return;
    this.begin();
    this.phase = 'dialing';
    this.joining = true;
    this.callId = summary.call_id;
    this.caller = summary.caller;
    this.media = media;
    for (const user of summary.joined) this.setPeer(user, 'joined');
    this.joinable = this.joinable.filter((c) => c.call_id !== summary.call_id);
    try {
      await this.backend.joinCall(summary.call_id, media);
    } catch (thrown) {
      this.refused(toApiError(thrown));
    }
  }

  /**
   * Catches up with a call that began before this window listened (the mini window, a main window
   * opened from the tray mid-call): its events so far, then the mutes. Live events that arrived
   * while the replay was on its way follow it, through `liveAfterReplay`.
   */
  replay(replay: CallReplay): void {
    if (replay.me) this.me = replay.me;
    for (const event of replay.events) this.handle(event);
    if (this.busy) this.applyMutes(replay.mutes);
    this.cameraOn = replay.camera_on;
  }

  /** The mutes as the shell has them (another window may have changed them). */
  applyMutes(mutes: Mutes): void {
    this.micMuted = mutes.microphone;
    this.speakerMuted = mutes.speaker;
  }

  toggleMicrophone(): Promise<void> {
    return this.toggleMute('micMuted', (muted) => this.backend.muteMicrophone(muted));
  }

  toggleSpeaker(): Promise<void> {
    return this.toggleMute('speakerMuted', (muted) => this.backend.muteSpeaker(muted));
  }

  /** Flips a mute at once, and back if the shell refuses. */
  private async toggleMute(which: 'micMuted' | 'speakerMuted', send: (muted: boolean) => Promise<unknown>): Promise<void> {
    const muted = !this[which];
    this[which] = muted;
    try {
      await send(muted);
    } catch (thrown) {
      this[which] = !muted;
      this.error = toApiError(thrown);
    }
  }

  /** Turns our camera off or on; the engine's `camera` event confirms it. */
  async toggleCamera(): Promise<void> {
    const on = !this.cameraOn;
    this.cameraOn = on;
    try {
      await this.backend.setCamera(on);
    } catch (thrown) {
      this.cameraOn = !on;
      this.error = toApiError(thrown);
    }
  }

  /** Takes the whole call down to audio (every camera is released). */
  async switchToAudio(): Promise<void> {
    if (this.media !== 'video' || !(this.phase === 'connected' || (this.phase === 'dialing' && this.callId !== null))) return;
    try {
      await this.backend.audioOnly();
    } catch (thrown) {
      this.error = toApiError(thrown);
    }
  }

  /** Asks the server which calls we could join (only calls with people in them, without us). */
  async refreshJoinable(): Promise<void> {
    try {
      const calls = await this.backend.activeCalls();
      this.joinable = calls.filter((c) => c.call_id !== this.callId && c.joined.length > 0 && !c.joined.includes(this.me));
    } catch {
      // Not signed in, or the server is away: keep what was shown; the next poll tries again.
    }
  }

  /** Polls for joinable calls while idle; `stop()` ends it. */
  watchJoinable(): void {
    if (this.poll !== null) return;
    this.poll = this.clock.setInterval(() => {
      if (this.phase === 'idle') void this.refreshJoinable();
    }, JOINABLE_POLL_MS);
  }

  /** Back to idle and no timers left (sign-out). */
  stop(): void {
    if (this.poll !== null) this.clock.clearInterval(this.poll);
    this.poll = null;
    this.reset();
    this.joinable = [];
  }

  // ---- inner workings ----

  private matches(callId: string): boolean {
    return this.callId === null || this.callId === callId;
  }

  /** A fresh call replaces whatever was shown (an ended call's hold included). */
  private begin(): void {
    this.clearTimers();
    this.callId = null;
    this.outgoing = false;
    this.caller = null;
    this.peers = [];
    this.joining = false;
    this.connectedAt = null;
    this.end = null;
    this.error = null;
    this.levels = {};
    this.speaker = null;
    this.weak = {};
    this.quality = {};
    this.links = {};
    this.videoOf = {};
    this.frozen = {};
    this.cameraError = null;
  }

  private setPeer(user: string, state: PeerState, options: { keep?: boolean } = {}): void {
    if (user === this.me) return;
    const peer = this.peers.find((p) => p.user === user);
    if (!peer) this.peers.push({ user, state });
    // `keep`: an invitation repeated for someone already answering must not set them back to ringing.
    else if (!(options.keep && peer.state === 'joined')) peer.state = state;
  }

  private refused(error: ApiError): void {
    this.error = error;
    // A refusal after the engine had already taken the call further changes nothing shown.
    if (this.phase === 'dialing' && this.connectedAt === null) this.finish({ kind: 'refused', code: error.code });
  }

  private finish(end: CallEnd): void {
    this.endedFrom = this.joining ? 'dialing' : this.phase;
    this.phase = 'ended';
    this.end = end;
    this.joining = false;
    // Nobody speaks and no link is weak or reconnecting in a call that is over.
    this.levels = {};
    this.speaker = null;
    this.weak = {};
    this.quality = {};
    this.links = {};
    this.clearTimers();
    this.hold = this.clock.setTimeout(() => {
      this.hold = null;
      this.reset();
      void this.refreshJoinable();
    }, ENDED_HOLD_MS);
  }

  private reset(): void {
    this.begin();
    this.phase = 'idle';
    this.media = 'audio';
    this.endedFrom = 'idle';
    // Each call starts unmuted (the engine lifts its mutes when a call ends and says so).
    this.micMuted = false;
    this.speakerMuted = false;
  }

  private startTicking(): void {
    if (this.tick !== null) return;
    this.tick = this.clock.setInterval(() => {
      this.now = this.clock.now();
    }, TICK_MS);
  }

  private clearTimers(): void {
    if (this.tick !== null) this.clock.clearInterval(this.tick);
    if (this.hold !== null) this.clock.clearTimeout(this.hold);
    this.tick = null;
    this.hold = null;
  }
}
