// The main window's stores, wired together: the first `app_info`, engine events and live updates
// dispatched to the stores that care, and what happens on sign-in and sign-out.

import type { CrashReport } from '../bindings/CrashReport';
import type { CallEvent } from '../bindings/CallEvent';
import type { CallReplay } from '../bindings/CallReplay';
import type { OpenedLink } from '../bindings/OpenedLink';
import type { Policy } from '../bindings/Policy';
import type { SignInRequest } from '../bindings/SignInRequest';
import type { Backend } from '../backend';
import type { Clock } from '../clock';
import { toApiError } from '../errors';
import type { AppEvent } from '../events';
import { setLanguage } from '../i18n/index.svelte';
import { allowedMedia, NO_POLICY } from '../policy';
import { prepareVideo } from '../video/frames';
import { videoLayer } from '../video/layer';
import { CallStore, ReplayGate } from './call.svelte';
import { ContactsStore } from './contacts.svelte';
import { HistoryStore } from './history.svelte';
import { PeopleStore } from './people.svelte';
import { SessionStore } from './session.svelte';
import { SettingsStore } from './settings.svelte';

export type View = 'contacts' | 'recents' | 'settings';

/** The built-in echo service's user (src-tauri/src/embedded.rs). */
export const ECHO_USER = 'echo';

export class HarkApp {
  readonly session: SessionStore;
  readonly contacts: ContactsStore;
  readonly people: PeopleStore;
  readonly call: CallStore;
  readonly history: HistoryStore;
  readonly settings: SettingsStore;
  view = $state<View>('contacts');
  /** `app_info` itself failed (the shell is broken): nothing else can work. */
  fatal = $state<string | null>(null);
  /** A `hark:` link's call waiting for the person's yes, or the reason a link was refused. */
  link = $state<OpenedLink | null>(null);
  /** Hark stopped unexpectedly last time: the report, until the person closes the notice. */
  crash = $state<CrashReport | null>(null);
  /** What the administrator's policy locks, as Rust read it at launch (nothing until `app_info`). */
  policy = $state<Policy>(NO_POLICY);
  /** The person closed the notice about a policy file that could not be fully read. */
  policyNoticeClosed = $state(false);
  /** The broken-policy notice shows: the file had parts Rust could not read, until closed. */
  policyNotice = $derived.by(() => this.policy.problems.length > 0 && !this.policyNoticeClosed);

  fullScreenIncoming = $derived.by(() => this.settings.value.incoming === 'full_screen');
  callVisible = $derived.by(() => this.call.showsCallView(this.fullScreenIncoming));
  /** Call events held back while a call in progress is replayed at start. */
  private readonly calls = new ReplayGate((call) => this.followCall(call));

  constructor(
    private readonly backend: Backend,
    private readonly clock: Clock,
  ) {
    this.session = new SessionStore(backend);
    this.contacts = new ContactsStore(backend);
    this.people = new PeopleStore(backend, this.contacts);
    this.call = new CallStore(backend, clock);
    this.history = new HistoryStore(backend);
    this.settings = new SettingsStore(backend);
  }

  async start(): Promise<void> {
    // Listen first: an event sent while `app_info` is on its way must not be lost.
    try {
      await this.backend.onEngineEvent((event) => this.dispatch(event));
      await this.backend.onLink(() => void this.takeLink());
      const info = await this.backend.appInfo();
      // Before the session: the sign-in form it brings up offers only the servers allowed.
      this.policy = info.policy;
      this.call.videoAllowed = info.policy.video;
      this.settings.set(info.settings);
      setLanguage(info.settings.language);
      this.session.applyInfo(info);
    } catch (thrown) {
      this.fatal = toApiError(thrown).message;
      return;
    }
    this.crash = await this.backend.takeCrashReport().catch(() => null);
    await this.catchUp();
    await this.backend.watchLive((update) => {
      this.call.live(update);
      this.settings.live(update);
    }).catch(() => undefined);
    // Missed calls from before this start are not news.
    this.history.markSeen(this.clock.now());
    if (this.session.account) this.afterSignIn();
  }

  /**
   * A call that rang or went on before this page listened (the page loaded while a call rang, or
   * the main window was reopened mid-call) is replayed into the call view; mutes changed in the
   * mini window reach this one.
   */
  private async catchUp(): Promise<void> {
    let replayed: CallReplay | null = null;
    try {
      await this.backend.onMutes((mutes) => {
        if (this.call.busy) this.call.applyMutes(mutes);
      });
      replayed = await this.backend.callReplay();
      this.call.replay(replayed);
      if (this.call.busy) void this.people.want([this.call.caller ?? '', ...this.call.peers.map((p) => p.user)]);
    } catch {
      // Nothing to catch up with, or the shell refused: live events still arrive.
    }
    this.calls.open(replayed?.events ?? []);
  }

  async signIn(request: SignInRequest): Promise<boolean> {
    const account = await this.session.signIn(request);
    if (account) this.afterSignIn();
    return account !== null;
  }

  async signOut(): Promise<void> {
    if (this.call.busy) await this.call.hangUp();
    await this.session.signOut();
    this.call.stop();
    this.contacts.clear();
    this.view = 'contacts';
  }

  /** Changes our display name and picture. */
  async setProfile(nickname: string, avatar: string | null): Promise<boolean> {
    const done = await this.session.setProfile(nickname, avatar);
    const account = this.session.account;
    if (done && account) this.people.remember({ user: account.user, nickname: account.nickname, avatar: account.avatar });
    return done;
  }

  /**
   * Takes the `hark:` link the app was opened with, to offer its call (or say why it was
   * refused). Until there is someone to call from, while another link is on screen (a newer one
   * must not slip in under the person's click) and during a call, the shell keeps it.
   */
  dismissCrash(): void {
    this.crash = null;
  }

  dismissPolicyNotice(): void {
    this.policyNoticeClosed = true;
  }

  /** Shows the log folder (where problem reports are) in the file manager. */
  openLogFolder(): Promise<void> {
    return this.backend.openLogFolder().then(() => undefined);
  }

  /** The diagnostics text for a bug report. */
  diagnostics(): Promise<string> {
    return this.backend.diagnostics();
  }

  async takeLink(): Promise<void> {
    if (!this.session.account || this.link || this.call.busy) return;
    const link = await this.backend.takeLink().catch(() => null);
    if (!link) return;
    if (link.kind === 'call') void this.people.want(link.link.to);
    this.link = link;
  }

  /** The person said yes to the link's call. */
  async acceptLink(): Promise<void> {
    const link = this.link;
    this.link = null;
    if (link?.kind === 'call') await this.placeCall(link.link.to, link.link.media);
  }

  /** The person said no to `link` (the one on screen when not said), then the next may come. */
  dismissLink(link: OpenedLink | null = this.link): void {
    if (link !== this.link) return;
    this.link = null;
    void this.takeLink();
  }

  /**
   * Redial, a contact's call button, the dial box, a group call and a link's call all come here;
   * while the policy turns video off, each is an audio call.
   */
  async placeCall(to: string[], asked: 'audio' | 'video'): Promise<void> {
    const media = allowedMedia(this.policy, asked);
    void this.people.want(to);
    if (media === 'video') this.prepareVideo();
    await this.call.place(to, media);
  }

  /**
   * A video call to the echo service: it sends our sound and picture back a second later, so a
   * person hears and sees that the microphone, speaker and camera work (only hears, while the
   * policy turns video off: `placeCall` makes it an audio call).
   */
  async testCall(): Promise<void> {
    await this.placeCall([ECHO_USER], 'video');
  }

  /** The time now (Unix ms), from the app's clock. */
  now(): number {
    return this.clock.now();
  }

  /** F11 and a double-click on the call. */
  toggleFullscreen(): void {
    void this.backend.toggleFullscreen().catch(() => undefined);
  }

  dispatch(event: AppEvent): void {
    if (event.kind === 'call') {
      // Held until the replay of a call in progress is in (`catchUp`).
      this.calls.push(event.call);
      return;
    }
    const engine = event.event;
    this.session.handle(engine);
    this.settings.handle(engine);
    this.call.video(engine);
    switch (engine.event) {
      case 'presence':
        this.contacts.presence(engine.user, engine.status);
        return;
      case 'voice_level':
        this.call.voiceLevel(engine.user, engine.level);
        return;
      case 'network_quality':
        this.call.networkQuality(engine.user, engine.weak, engine);
        return;
      case 'media_link':
        this.call.mediaLink(engine.user, engine.state);
        return;
      case 'signed_in':
        // After a reconnect the server may have moved on: what can be joined, who is online.
        if (engine.resumed) {
          void this.contacts.load();
          void this.call.refreshJoinable();
        }
        return;
      case 'sign_in_refused':
        this.call.stop();
        return;
      default:
        return;
    }
  }

  /**
   * Gets video ready while a video call rings or is placed: the app's video layer where this
   * window has one (the page then decodes and draws nothing, and loads no decoder), the page's
   * frame connection and VP8 decoding otherwise.
   */
  private prepareVideo(): void {
    void videoLayer(this.backend).then((drawnByApp) => {
      if (!drawnByApp) prepareVideo(() => this.backend.frameSocket());
    });
  }

  private followCall(call: CallEvent): void {
    this.call.handle(call);
    if (call.event === 'incoming_call') void this.people.want([call.caller, ...call.invitees]);
    if (call.event === 'incoming_call' && allowedMedia(this.policy, call.media) === 'video') this.prepareVideo();
    if (call.event === 'user_joined') void this.people.want([call.user]);
    if (call.event === 'users_invited') void this.people.want(call.users);
    // A call that ended leaves a record behind, and a link that came meanwhile may be offered.
    if (call.event === 'call_ended' || call.event === 'not_connected') {
      void this.history.load();
      void this.takeLink();
    }
  }

  private afterSignIn(): void {
    const account = this.session.account;
    if (!account) return;
    this.call.me = account.user;
    this.people.remember({ user: account.user, nickname: account.nickname, avatar: account.avatar });
    void this.contacts.load();
    void this.history.load();
    void this.settings.loadDevices();
    void this.settings.loadCameras();
    void this.settings.loadRingtones();
    void this.call.refreshJoinable();
    this.call.watchJoinable();
    void this.takeLink();
  }
}
