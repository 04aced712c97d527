// The only door to the Rust side: one typed function per Tauri command, the `engine` event, the
// live-update channel and the few window actions the UI needs. Nothing else imports
// `@tauri-apps/api`. Every failure is rethrown as an `ApiError` (`{code, message}`), so callers
// switch on `code`. Stores take the functions they need as a parameter (`Pick<Backend, ..>`), so
// unit tests give them fakes.

import { Channel, invoke } from '@tauri-apps/api/core';
import { listen } from '@tauri-apps/api/event';
import { getCurrentWindow } from '@tauri-apps/api/window';

import type { Account } from './bindings/Account';
import type { AppInfo } from './bindings/AppInfo';
import type { Policy } from './bindings/Policy';
import type { CallRecord } from './bindings/CallRecord';
import type { CallReplay } from './bindings/CallReplay';
import type { CallSummary } from './bindings/CallSummary';
import type { Contact } from './bindings/Contact';
import type { CrashReport } from './bindings/CrashReport';
import type { CameraInfo } from './bindings/CameraInfo';
import type { DeviceInfo } from './bindings/DeviceInfo';
import type { FrameSocketInfo } from './bindings/FrameSocketInfo';
import type { VideoLayerNews } from './bindings/VideoLayerNews';
import type { VideoPlacement } from './bindings/VideoPlacement';
import type { IncomingCall } from './bindings/IncomingCall';
import type { OpenedLink } from './bindings/OpenedLink';
import type { LiveUpdate } from './bindings/LiveUpdate';
import type { Media } from './bindings/Media';
import type { Mutes } from './bindings/Mutes';
import type { RingtoneOption } from './bindings/RingtoneOption';
import type { RingtoneSetting } from './bindings/RingtoneSetting';
import type { Settings } from './bindings/Settings';
import type { SignInRequest } from './bindings/SignInRequest';
import type { CommandName } from './bindings/CommandName';
import type { UserProfile } from './bindings/UserProfile';
import { toApiError } from './errors';
import { normalizeEvent, type AppEvent } from './events';

/** Which window this page runs in. */
export type WindowLabel = 'main' | 'incoming' | 'mini';

async function command<T>(name: CommandName, args?: Record<string, unknown>): Promise<T> {
  try {
    return await invoke<T>(name, args);
  } catch (thrown) {
    throw toApiError(thrown);
  }
}

export const backend = {
  appInfo: () => command<AppInfo>('app_info'),
  policy: () => command<Policy>('policy'),
  signIn: (request: SignInRequest) => command<Account>('sign_in', { request }),
  signOut: () => command<null>('sign_out'),
  setProfile: (nickname: string | null, avatar: string | null) => command<null>('set_profile', { nickname, avatar }),

  contacts: () => command<Contact[]>('contacts'),
  addContact: (user: string, alias: string | null) => command<null>('add_contact', { user, alias }),
  removeContact: (user: string) => command<null>('remove_contact', { user }),
  profiles: (users: string[]) => command<UserProfile[]>('profiles', { users }),

  placeCall: (to: string[], media: Media) => command<null>('place_call', { to, media }),
  /** Answers; `audioOnly` answers a video call with audio (our camera never opens). */
  acceptCall: (audioOnly = false) => command<null>('accept_call', audioOnly ? { audioOnly } : {}),
  rejectCall: () => command<null>('reject_call'),
  hangUp: () => command<null>('hang_up'),
  inviteMore: (to: string[]) => command<null>('invite_more', { to }),
  joinCall: (callId: string, media: Media) => command<null>('join_call', { callId, media }),
  incomingCall: () => command<IncomingCall | null>('incoming_call'),
  /** The `hark:` link the app was opened with, once. */
  takeLink: () => command<OpenedLink | null>('take_link'),
  /** The problem report a crash left since the last start, once. */
  takeCrashReport: () => command<CrashReport | null>('take_crash_report'),
  /** What "Copy diagnostics" copies: versions, devices, server, last problems (no secrets). */
  diagnostics: () => command<string>('diagnostics'),
  openLogFolder: () => command<null>('open_log_folder'),
  activeCalls: () => command<CallSummary[]>('active_calls'),
  muteMicrophone: (muted: boolean) => command<null>('mute_microphone', { muted }),
  muteSpeaker: (muted: boolean) => command<null>('mute_speaker', { muted }),
  setCamera: (on: boolean) => command<null>('set_camera', { on }),
  audioOnly: () => command<null>('audio_only'),
  /** Where video pictures are read: the frame socket's port and this launch's token. */
  frameSocket: () => command<FrameSocketInfo>('frame_socket'),
  /** Has the app draw the call view's pictures over this page (`false`: it cannot here, the page draws them); the layer's news go to `onNews`. */
  videoLayer: async (onNews: (news: VideoLayerNews) => void): Promise<boolean> => {
    const channel = new Channel<VideoLayerNews>();
    channel.onmessage = onNews;
    return command<boolean>('video_layer', { channel });
  },
  /** Where the video layer draws which tiles now, in order, and what it leaves showing in each. */
  placeVideo: (placements: VideoPlacement[]) => command<null>('place_video', { placements }),
  /** The call going on, as its events so far: for a window that opens in its middle. */
  callReplay: () => command<CallReplay>('call_replay'),
  /** Brings the main window (and its call view) back; the mini window uses it. */
  showMain: () => command<null>('show_main'),

  history: () => command<CallRecord[]>('history'),
  deleteHistory: (callIds: string[]) => command<null>('delete_history', { callIds }),
  clearHistory: () => command<null>('clear_history'),

  devices: () => command<DeviceInfo[]>('devices'),
  cameras: () => command<CameraInfo[]>('cameras'),
  /** Opens the camera outside a call for the settings' preview (its pictures on the `self` tile), or closes it. */
  previewCamera: (on: boolean) => command<null>('preview_camera', { on }),
  playTestSound: () => command<null>('play_test_sound'),
  microphoneMeter: (on: boolean) => command<null>('microphone_meter', { on }),
  settings: () => command<Settings>('settings'),
  saveSettings: (settings: Settings) => command<Settings>('save_settings', { settings }),
  ringtones: () => command<RingtoneOption[]>('ringtones'),
  chooseRingtoneFile: () => command<string | null>('choose_ringtone_file'),
  previewRingtone: (source: RingtoneSetting) => command<null>('preview_ringtone', { source }),
  stopPreview: () => command<null>('stop_preview'),

  /** Levels and network quality, several times a second, on a channel (events are too slow). */
  watchLive: async (onUpdate: (update: LiveUpdate) => void): Promise<void> => {
    const channel = new Channel<LiveUpdate>();
    channel.onmessage = onUpdate;
    await command<null>('watch_live', { channel });
  },

  /** Engine events, already normalized; resolves to a function that stops listening. */
  onEngineEvent: async (handler: (event: AppEvent) => void): Promise<() => void> => {
    return listen<unknown>('engine', (message) => {
      const event = normalizeEvent(message.payload);
      if (event) handler(event);
    });
  },

  /** A `hark:` link came (Hark was running): take it with `takeLink`. */
  onLink: async (handler: () => void): Promise<() => void> => {
    return listen<null>('link', () => handler());
  },

  /** The mutes, whenever any window changes them; resolves to a function that stops listening. */
  onMutes: async (handler: (mutes: Mutes) => void): Promise<() => void> => {
    return listen<Mutes>('mutes', (message) => handler(message.payload));
  },

  windowLabel: (): WindowLabel => {
    try {
      const label = getCurrentWindow().label;
      return label === 'incoming' || label === 'mini' ? label : 'main';
    } catch {
      // Outside Tauri (a plain browser during `vite dev`): behave as the main window.
      return 'main';
    }
  },

  toggleFullscreen: async (): Promise<void> => {
    try {
      const window = getCurrentWindow();
      await window.setFullscreen(!(await window.isFullscreen()));
    } catch (thrown) {
      throw toApiError(thrown);
    }
  },

  closeWindow: async (): Promise<void> => {
    try {
      await getCurrentWindow().close();
    } catch (thrown) {
      throw toApiError(thrown);
    }
  },
};

export type Backend = typeof backend;
