// What the IT administrator's policy file (`/etc/hark/policy.toml`, read by Rust at launch) means
// for the UI: which media a call may use, what the sign-in form offers as the server, and what is
// locked and why. The Rust side refuses whatever the policy forbids (`forbidden_by_policy`); the
// UI hides or disables it and says so, so a person never meets the refusal by surprise.

import type { IncomingPresentation } from './bindings/IncomingPresentation';
import type { Media } from './bindings/Media';
import type { Policy } from './bindings/Policy';
import type { MessageKey } from './i18n/en';
import { t } from './i18n/index.svelte';

/** No policy file: everything allowed, nothing locked (what Rust says without one). */
export const NO_POLICY: Policy = {
  file: null,
  reason: null,
  server_locked: false,
  server: null,
  builtin_server: true,
  video: true,
  invite_more: true,
  relay_only: false,
  custom_ringtones: true,
  default_incoming: null,
  incoming_locked: false,
  problems: [],
};

/** The media a call may be placed or joined with: a video call is an audio one while video is off. */
export function allowedMedia(policy: Pick<Policy, 'video'>, media: Media): Media {
  return policy.video ? media : 'audio';
}

/** The kinds of call a person is offered (one button each). */
export function callMedia(policy: Pick<Policy, 'video'>): Media[] {
  return policy.video ? ['audio', 'video'] : ['audio'];
}

/** The words beside a locked setting: the administrator's own, or a plain "set by your administrator". */
export function lockReason(policy: Pick<Policy, 'reason'>): string {
  return policy.reason ?? t('policy.by_admin');
}

/**
 * The sign-in form's server: fixed by a server lock (`server` null: the built-in one), or free,
 * with the built-in server offered only while the policy allows it.
 */
export type ServerChoice = { kind: 'locked'; server: string | null } | { kind: 'free'; builtin: boolean };

export function serverChoice(policy: Policy): ServerChoice {
  if (policy.server_locked) return { kind: 'locked', server: policy.server };
  return { kind: 'free', builtin: policy.builtin_server };
}

/** How incoming calls show while the policy locks it; null while the person chooses. */
export function lockedIncoming(policy: Policy): IncomingPresentation | null {
  // Rust always names the presentation it locks; a lock without one is the banner, as there.
  return policy.incoming_locked ? (policy.default_incoming ?? 'banner') : null;
}

/** One thing the policy locks, as a line of Settings' "Set by your administrator" list. */
export type Lock = { id: string; key: MessageKey; params?: Record<string, string> };

/** Everything the policy locks, in the order Settings lists it; empty without a policy file. */
export function locks(policy: Policy): Lock[] {
  if (policy.file === null) return [];
  const found: Lock[] = [];
  if (policy.server_locked) {
    found.push(policy.server === null ? { id: 'server', key: 'policy.server_builtin' } : { id: 'server', key: 'policy.server', params: { server: policy.server } });
  } else if (!policy.builtin_server) {
    found.push({ id: 'builtin_server', key: 'policy.no_builtin' });
  }
  if (!policy.video) found.push({ id: 'video', key: 'policy.video_off' });
  if (!policy.invite_more) found.push({ id: 'invite_more', key: 'policy.invite_off' });
  if (!policy.custom_ringtones) found.push({ id: 'custom_ringtones', key: 'policy.ringtone_files_off' });
  const incoming = lockedIncoming(policy);
  if (incoming !== null) found.push({ id: 'incoming', key: incoming === 'banner' ? 'policy.incoming_banner' : 'policy.incoming_full' });
  if (policy.relay_only) found.push({ id: 'relay_only', key: 'policy.relay_only' });
  return found;
}
