// The incoming-call banner window's state. That window has its own page and JavaScript, so it
// asks the shell which call rings when it opens (the event went by before it existed), answers
// it, and closes itself once the call no longer rings here.

import type { ApiError } from '../bindings/ApiError';
import type { IncomingCall } from '../bindings/IncomingCall';
import type { Backend } from '../backend';
import { toApiError } from '../errors';
import type { AppEvent } from '../events';

export type BannerBackend = Pick<Backend, 'incomingCall' | 'policy' | 'acceptCall' | 'rejectCall' | 'closeWindow'>;

export type BannerStatus = 'loading' | 'ringing' | 'answering' | 'closed';

export class BannerStore {
  call = $state<IncomingCall | null>(null);
  status = $state<BannerStatus>('loading');
  error = $state<ApiError | null>(null);
  /** The administrator's policy allows video: without it, a video call is answered with audio. */
  videoAllowed = $state(true);

  constructor(private readonly backend: BannerBackend) {}

  async load(): Promise<void> {
    // Asked side by side with the call. If the shell will not say, video stays offered: the
    // engine answers with audio anyway while the policy turns video off.
    const policy = this.backend.policy().then(
      (policy) => policy,
      () => null,
    );
    try {
      this.call = await this.backend.incomingCall();
    } catch (thrown) {
      this.error = toApiError(thrown);
      this.call = null;
    }
    this.videoAllowed = (await policy)?.video ?? true;
    if (this.call) this.status = 'ringing';
    else await this.close();
  }

  /** Answers: with video as the call came, or with audio while the policy turns video off. */
  accept(): Promise<void> {
    const audioOnly = !this.videoAllowed && this.call?.media === 'video';
    return this.answer(() => this.backend.acceptCall(audioOnly));
  }

  /** Answers a video call with audio only. */
  acceptAudioOnly(): Promise<void> {
    return this.answer(() => this.backend.acceptCall(true));
  }

  decline(): Promise<void> {
    return this.answer(() => this.backend.rejectCall());
  }

  /** Accept or decline, once: the banner closes when the shell took the answer. */
  private async answer(send: () => Promise<unknown>): Promise<void> {
    if (this.status !== 'ringing') return;
    this.status = 'answering';
    try {
      await send();
      await this.close();
    } catch (thrown) {
      this.error = toApiError(thrown);
      this.status = 'ringing';
    }
  }

  /** Engine events: a call that stops ringing (answered elsewhere, cancelled) closes the banner;
   *  a new one replaces it. */
  handle(event: AppEvent): void {
    if (event.kind !== 'call') return;
    const call = event.call;
    switch (call.event) {
      case 'incoming_call':
        if (call.call_id !== this.call?.call_id) void this.load();
        return;
      case 'not_connected':
      case 'call_ended':
      case 'call_began':
        if (call.call_id === null || call.call_id === this.call?.call_id) void this.close();
        return;
      default:
        return;
    }
  }

  private async close(): Promise<void> {
    this.status = 'closed';
    try {
      await this.backend.closeWindow();
    } catch {
      // The shell may have closed the window itself first.
    }
  }
}
