// A stand-in for `backend.ts` in unit tests: every command resolves with a harmless default and is
// recorded; a test overrides the ones it cares about (to return data or throw an `ApiError`).

import type { Backend } from '../backend';
import type { AppEvent } from '../events';
import type { LiveUpdate } from '../bindings/LiveUpdate';
import type { Mutes } from '../bindings/Mutes';
import type { Settings } from '../bindings/Settings';
import { NO_POLICY } from '../policy';
import { DEFAULT_SETTINGS } from '../stores/settings.svelte';

export type Recorded = { name: keyof Backend; args: unknown[] };

export interface FakeBackend extends Backend {
  calls: Recorded[];
  /** Calls of one command, by their arguments. */
  callsOf(name: keyof Backend): unknown[][];
  /** Sends an engine event to whoever listens. */
  emit(event: AppEvent): void;
  /** Sends a live update to the channel. */
  live(update: LiveUpdate): void;
  /** Announces the mutes, as the shell does after any window changed them. */
  mutes(mutes: Mutes): void;
}

export function fakeBackend(overrides: Partial<Backend> = {}): FakeBackend {
  const calls: Recorded[] = [];
  const listeners: ((event: AppEvent) => void)[] = [];
  const liveListeners: ((update: LiveUpdate) => void)[] = [];
  const muteListeners: ((mutes: Mutes) => void)[] = [];
  const defaults: Backend = {
    appInfo: async () => ({
      version: '0.0.0-test',
      embedded_server: 'http://127.0.0.1:7000',
      account: null,
      last_user: null,
      settings: { ...DEFAULT_SETTINGS },
      policy: { ...NO_POLICY, problems: [] },
    }),
    policy: async () => ({ ...NO_POLICY, problems: [] }),
    signIn: async (request) => ({ user: request.user, nickname: request.nickname ?? request.user, avatar: request.avatar, server: request.server ?? 'http://127.0.0.1:7000', embedded: request.server === null }),
    signOut: async () => null,
    setProfile: async () => null,
    contacts: async () => [],
    addContact: async () => null,
    removeContact: async () => null,
    profiles: async (users) => users.map((user) => ({ user, nickname: user.toUpperCase(), avatar: null })),
    placeCall: async () => null,
    acceptCall: async () => null,
    rejectCall: async () => null,
    hangUp: async () => null,
    inviteMore: async () => null,
    joinCall: async () => null,
    incomingCall: async () => null,
    takeLink: async () => null,
    takeCrashReport: async () => null,
    diagnostics: async () => 'Hark: 0.0.0-test\n',
    openLogFolder: async () => null,
    onLink: async () => () => undefined,
    activeCalls: async () => [],
    muteMicrophone: async () => null,
    muteSpeaker: async () => null,
    setCamera: async () => null,
    audioOnly: async () => null,
    // No frame socket in unit tests (there is no WebSocket to reach it): tiles show avatars.
    frameSocket: async () => {
      throw { code: 'internal', message: 'no frame socket in unit tests' };
    },
    videoLayer: async () => false,
    placeVideo: async () => null,
    cameras: async () => [],
    previewCamera: async () => null,
    callReplay: async () => ({ me: null, events: [], mutes: { microphone: false, speaker: false }, camera_on: true }),
    showMain: async () => null,
    history: async () => [],
    deleteHistory: async () => null,
    clearHistory: async () => null,
    devices: async () => [],
    playTestSound: async () => null,
    microphoneMeter: async () => null,
    settings: async () => ({ ...DEFAULT_SETTINGS }),
    saveSettings: async (settings: Settings) => settings,
    ringtones: async () => [{ source: { kind: 'bundled', name: 'classic' }, name: 'classic' }],
    chooseRingtoneFile: async () => null,
    previewRingtone: async () => null,
    stopPreview: async () => null,
    watchLive: async (onUpdate) => {
      liveListeners.push(onUpdate);
    },
    onEngineEvent: async (handler) => {
      listeners.push(handler);
      return () => listeners.splice(listeners.indexOf(handler), 1);
    },
    onMutes: async (handler) => {
      muteListeners.push(handler);
      return () => muteListeners.splice(muteListeners.indexOf(handler), 1);
    },
    windowLabel: () => 'main',
    toggleFullscreen: async () => undefined,
    closeWindow: async () => undefined,
  };
  const merged = { ...defaults, ...overrides } as Record<string, (...args: unknown[]) => unknown>;
  const recorded = Object.fromEntries(
    Object.entries(merged).map(([name, run]) => [
      name,
      (...args: unknown[]) => {
        calls.push({ name: name as keyof Backend, args });
        return run(...args);
      },
    ]),
  ) as unknown as Backend;
  return {
    ...recorded,
    calls,
    callsOf: (name) => calls.filter((c) => c.name === name).map((c) => c.args),
    emit: (event) => listeners.forEach((listener) => listener(event)),
    live: (update) => liveListeners.forEach((listener) => listener(update)),
    mutes: (mutes) => muteListeners.forEach((listener) => listener(mutes)),
  };
}

/** Lets pending promise callbacks run (a command's `await` and what follows it). */
export async function settle(): Promise<void> {
  await new Promise((resolve) => setTimeout(resolve, 0));
}
