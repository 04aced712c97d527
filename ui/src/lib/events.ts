// The one place that knows how an `engine` event's payload is shaped on the wire.
//
// `EngineEvent` is internally tagged (`"event"`), and its `Call(CallEvent)` variant wraps another
// enum tagged with the same key. serde writes such a call event as `{"event":"call", ...fields of
// the inner event including its own "event"}`: two `event` keys, of which JSON.parse keeps the
// last, so it arrives looking like `{"event":"dialing","call_id":..}`. If the Rust side ever
// nests it instead (`{"event":"call","call":{..}}`), that is accepted too. Everything downstream
// sees an `AppEvent`, so a change of shape is a change here only.

import type { CallEvent } from './bindings/CallEvent';
import type { EngineEvent } from './bindings/EngineEvent';

/** Every engine event other than the call events. */
export type OtherEngineEvent = Exclude<EngineEvent, { event: 'call' }>;

export type AppEvent = { kind: 'call'; call: CallEvent } | { kind: 'engine'; event: OtherEngineEvent };

const CALL_EVENTS: ReadonlySet<string> = new Set<CallEvent['event']>([
  'incoming_call',
  'dialing',
  'call_began',
  'call_ended',
  'not_connected',
  'user_joined',
  'user_left',
  'user_rejected',
  'user_no_response',
  'user_busy',
  'users_invited',
  'media_changed',
  'remote_camera',
  'error',
]);

const ENGINE_EVENTS: ReadonlySet<string> = new Set<OtherEngineEvent['event']>([
  'signed_in',
  'signaling_lost',
  'sign_in_refused',
  'remote_audio_available',
  'voice_level',
  'network_quality',
  'media_link',
  'ringtone',
  'ringtone_playing',
  'ringtone_stopped',
  'ringtone_failed',
  'device_fallback',
  'device_list_changed',
  'presence',
  'camera_started',
  'camera_error',
  'camera',
  'camera_list_changed',
  'first_remote_video_frame',
  'remote_video_available',
  'remote_video_unavailable',
  'remote_video_undecodable',
  'remote_video_frozen',
  'remote_video_recovered',
  'video_bitrate',
]);

function tagOf(raw: unknown): string | null {
  if (typeof raw !== 'object' || raw === null) return null;
  const tag = (raw as { event?: unknown }).event;
  return typeof tag === 'string' ? tag : null;
}

/**
 * The event a raw payload stands for, or `null` for one this UI does not know (the Rust enums are
 * `non_exhaustive`: a newer engine may send more).
 */
export function normalizeEvent(raw: unknown): AppEvent | null {
  const tag = tagOf(raw);
  if (tag === null) return null;
  if (tag === 'call') {
    const inner = (raw as { call?: unknown }).call;
    const innerTag = tagOf(inner);
    return innerTag !== null && CALL_EVENTS.has(innerTag) ? { kind: 'call', call: inner as CallEvent } : null;
  }
  if (CALL_EVENTS.has(tag)) return { kind: 'call', call: raw as CallEvent };
  if (ENGINE_EVENTS.has(tag)) return { kind: 'engine', event: raw as OtherEngineEvent };
  return null;
}
