// The call view's status line, from the call store's state: one sentence for each phase and for
// each way a call can end. Kept apart from the component so every case has a unit test.

import { errorKey } from '../errors';
import type { MessageKey } from '../i18n/en';
import type { CallEnd, CallPhase, Peer } from './call.svelte';
import type { ApiError } from '../bindings/ApiError';
import type { Media } from '../bindings/Media';
import type { MediaLinkState } from '../bindings/MediaLinkState';

export type Translate = (key: MessageKey, params?: Record<string, string | number>) => string;

/** The parts of the call store the status line reads. */
export interface CallStatusInput {
  phase: CallPhase;
  joining: boolean;
  media: Media;
  peers: readonly Peer[];
  end: CallEnd | null;
  endedFrom: CallPhase;
  error: ApiError | null;
  /** Whether each person's media arrives (the engine's `media_link`). */
  links: Readonly<Record<string, MediaLinkState>>;
}

/** A 1:1 call whose other person's media stopped arriving. */
export function reconnectingOneToOne(call: Pick<CallStatusInput, 'peers' | 'links'>): boolean {
  return call.peers.length === 1 && (call.links[call.peers[0].user] ?? 'connected') !== 'connected';
}

export function callStatus(call: CallStatusInput, t: Translate): string {
  switch (call.phase) {
    case 'idle':
      return '';
    case 'incoming':
      if (call.joining) return t('call.connecting');
      return t(call.media === 'video' ? 'call.incoming_video' : 'call.incoming_audio');
    case 'dialing':
      return t(call.joining ? 'call.connecting' : 'call.calling');
    case 'connected': {
      // "Connected" over a dead path would be a lie: a 1:1 call says it reconnects (a group's
      // tiles say whose link it is).
      if (reconnectingOneToOne(call)) return t(call.links[call.peers[0].user] === 'lost' ? 'call.media_lost' : 'call.reconnecting');
      const joined = call.peers.filter((p) => p.state === 'joined').length;
      return call.peers.length > 1 ? t('call.in_call', { count: joined + 1 }) : t('call.connected');
    }
    case 'ended':
      return endText(call, t);
  }
}

function endText(call: CallStatusInput, t: Translate): string {
  const end = call.end;
  if (!end) return t('end.hangup');
  switch (end.kind) {
    case 'refused':
      return t('end.error', { reason: t(errorKey(end.code)) });
    case 'ended':
      if (end.reason === 'hangup') return t('end.hangup');
      return t(`end.${end.reason}`);
    case 'not_connected':
      // The engine tells why an invitation failed in an `error` event just before.
      if (end.reason === 'failed' && call.error) return t('end.error', { reason: t(errorKey(call.error.code)) });
      // For us, an invitation the caller gave up on (or that rang out) is a missed call.
      if ((end.reason === 'cancelled' || end.reason === 'no_answer') && call.endedFrom === 'incoming') return t('end.missed');
      return t(`end.${end.reason}`);
  }
}
