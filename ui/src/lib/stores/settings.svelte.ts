// The user's settings and what the settings page needs around them: sound devices, the bundled
// ringtones, the microphone meter, the ringtone preview and the last error.
//
// Every change is saved at once (`save_settings` applies it in Rust and returns what it kept);
// the page shows the change immediately and puts the old value back if the save is refused.

import type { ApiError } from '../bindings/ApiError';
import type { CameraInfo } from '../bindings/CameraInfo';
import type { DeviceInfo } from '../bindings/DeviceInfo';
import type { LiveUpdate } from '../bindings/LiveUpdate';
import type { RingtoneOption } from '../bindings/RingtoneOption';
import type { RingtoneSetting } from '../bindings/RingtoneSetting';
import type { Settings } from '../bindings/Settings';
import type { Backend } from '../backend';
import { toApiError } from '../errors';
import type { OtherEngineEvent } from '../events';

export type SettingsBackend = Pick<
  Backend,
  | 'saveSettings'
  | 'devices'
  | 'ringtones'
  | 'chooseRingtoneFile'
  | 'previewRingtone'
  | 'stopPreview'
  | 'microphoneMeter'
  | 'playTestSound'
  | 'cameras'
  | 'previewCamera'
>;

/** The same defaults as the Rust side, until `app_info` tells the real ones. */
export const DEFAULT_SETTINGS: Settings = {
  server: null,
  proxy: '',
  incoming: 'banner',
  ringtone: { kind: 'bundled', name: 'classic' },
  ringtone_volume: 80,
  ringtone_muted: false,
  echo_cancellation: true,
  noise_suppression: true,
  microphone: null,
  speaker: null,
  language: 'en',
  theme: 'system',
  camera: null,
  video_resolution: '360p',
  camera_off_at_start: false,
  microphone_muted_at_start: false,
  connect_after_answer: false,
  start_at_login: false,
  start_hidden: false,
  tel_links: false,
};

/** A file of the user's as the ringtone setting. */
export function customRingtone(path: string): RingtoneSetting {
  return { kind: 'custom', path: path.trim() };
}

/** The ringtone picker's value for a setting (an <option> value: only this page reads it). */
export function ringtoneKey(ringtone: RingtoneSetting): string {
  return ringtone.kind === 'bundled' ? `bundled:${ringtone.name}` : `custom:${ringtone.path}`;
}

/** The last part of a path, with `/` or a backslash between parts (`/home/me/ring.ogg` → `ring.ogg`). */
export function fileName(path: string): string {
  return path.split(/[\\/]/).filter(Boolean).pop() ?? path;
}

/** One entry of a picker: `label` is a name to show as is; `custom` (ringtones, with the whole
 *  path as `title`) and `missing` (devices) entries are worded by the page; `selected` marks the
 *  current setting. */
export type Choice = { value: string; label: string; selected: boolean; custom?: boolean; missing?: boolean; title?: string };

/**
 * The "Ringtone sound" entries: the bundled ones, then the current setting if it is none of them
 * (a file of the user's, labelled with its file name; or a bundled name this app does not list),
 * so the current setting is always there and selected.
 */
export function ringtoneChoices(bundled: readonly RingtoneOption[], current: RingtoneSetting): Choice[] {
  const now = ringtoneKey(current);
  const choices: Choice[] = bundled.map((option) => ({ value: ringtoneKey(option.source), label: option.name, selected: ringtoneKey(option.source) === now }));
  if (!choices.some((c) => c.selected)) {
    choices.push(
      current.kind === 'custom'
        ? { value: now, label: fileName(current.path), selected: true, custom: true, title: current.path }
        : { value: now, label: current.name, selected: true },
    );
  }
  return choices;
}

/** The setting a ringtone picker's value stands for (one of the bundled sounds, or the current one). */
export function ringtoneFromKey(bundled: readonly RingtoneOption[], current: RingtoneSetting, key: string): RingtoneSetting {
  return bundled.find((option) => ringtoneKey(option.source) === key)?.source ?? current;
}

/**
 * A device picker's entries: the system default first (value `''`, label `''`: the page words it),
 * then the devices of that direction; a chosen device that is not connected now stays listed
 * (`missing`), so the picker never shows an empty box.
 */
export function deviceChoices(devices: readonly DeviceInfo[], direction: DeviceInfo['direction'], current: string | null): Choice[] {
  const choices: Choice[] = [{ value: '', label: '', selected: current === null }];
  for (const device of devices) {
    if (device.direction === direction && !choices.some((c) => c.value === device.id)) {
      choices.push({ value: device.id, label: device.name, selected: device.id === current });
    }
  }
  if (current !== null && !choices.some((c) => c.selected)) choices.push({ value: current, label: current, selected: true, missing: true });
  return choices;
}

/**
 * The camera picker's entries: the system default first (value `''`), then each camera by its
 * device number; a chosen camera that is not connected now stays listed (`missing`).
 */
export function cameraChoices(cameras: readonly CameraInfo[], current: number | null): Choice[] {
  const choices: Choice[] = [{ value: '', label: '', selected: current === null }];
  for (const camera of cameras) choices.push({ value: String(camera.index), label: camera.name, selected: camera.index === current });
  if (current !== null && !choices.some((c) => c.selected)) choices.push({ value: String(current), label: `/dev/video${current}`, selected: true, missing: true });
  return choices;
}

export class SettingsStore {
  value = $state<Settings>({ ...DEFAULT_SETTINGS });
  devices = $state<DeviceInfo[]>([]);
  cameras = $state<CameraInfo[]>([]);
  ringtones = $state<RingtoneOption[]>([]);
  /** The settings' microphone meter, 0–100. */
  meter = $state(0);
  /** The sound being previewed or rung, if any. */
  playing = $state<string | null>(null);
  error = $state<ApiError | null>(null);
  /** Counts saves that went through (the page flashes "Saved"). */
  saves = $state(0);

  constructor(private readonly backend: SettingsBackend) {}

  /** Takes settings as Rust has them (from `app_info`). */
  set(settings: Settings): void {
    this.value = settings;
  }

  /** Changes some settings and saves them; false (and the old values back) if refused. */
  async save(patch: Partial<Settings>): Promise<boolean> {
    const before = this.value;
    this.value = { ...before, ...patch };
    this.error = null;
    try {
      this.value = await this.backend.saveSettings($state.snapshot(this.value));
      this.saves += 1;
      return true;
    } catch (thrown) {
      this.value = before;
      this.error = toApiError(thrown);
      return false;
    }
  }

  async loadDevices(): Promise<void> {
    try {
      this.devices = await this.backend.devices();
    } catch (thrown) {
      this.error = toApiError(thrown);
    }
  }

  async loadCameras(): Promise<void> {
    try {
      this.cameras = await this.backend.cameras();
    } catch (thrown) {
      this.error = toApiError(thrown);
    }
  }

  /** The camera preview of the settings page (opened outside calls only). */
  async cameraPreview(on: boolean): Promise<void> {
    try {
      await this.backend.previewCamera(on);
    } catch (thrown) {
      if (on) this.error = toApiError(thrown);
    }
  }

  async loadRingtones(): Promise<void> {
    try {
      this.ringtones = await this.backend.ringtones();
    } catch (thrown) {
      this.error = toApiError(thrown);
    }
  }

  /** Uses a sound file of the user's own, by path. */
  async useRingtoneFile(path: string): Promise<boolean> {
    if (!path.trim()) return false;
    return this.save({ ringtone: customRingtone(path) });
  }

  /** Lets the user pick a sound file in a native dialog, then uses it; the path, or null. */
  async chooseRingtoneFile(): Promise<string | null> {
    try {
      const path = await this.backend.chooseRingtoneFile();
      if (path === null) return null;
      return (await this.useRingtoneFile(path)) ? path : null;
    } catch (thrown) {
      this.error = toApiError(thrown);
      return null;
    }
  }

  async preview(): Promise<void> {
    this.error = null;
    try {
      await this.backend.previewRingtone(this.value.ringtone);
    } catch (thrown) {
      this.error = toApiError(thrown);
    }
  }

  async stopPreview(): Promise<void> {
    try {
      await this.backend.stopPreview();
      this.playing = null;
    } catch (thrown) {
      this.error = toApiError(thrown);
    }
  }

  async meterOn(on: boolean): Promise<void> {
    if (!on) this.meter = 0;
    try {
      await this.backend.microphoneMeter(on);
    } catch (thrown) {
      if (on) this.error = toApiError(thrown);
    }
  }

  async testSound(): Promise<void> {
    try {
      await this.backend.playTestSound();
    } catch (thrown) {
      this.error = toApiError(thrown);
    }
  }

  handle(event: OtherEngineEvent): void {
    switch (event.event) {
      case 'ringtone_playing':
        this.playing = event.source;
        return;
      case 'ringtone_stopped':
        this.playing = null;
        return;
      case 'ringtone_failed':
        this.error = { code: event.code, message: event.message };
        return;
      case 'device_list_changed':
        this.devices = event.devices;
        return;
      case 'camera_list_changed':
        this.cameras = event.cameras;
        return;
      case 'device_fallback':
        // The default device took over; only tell when even that failed.
        if (event.error !== null) this.error = { code: 'no_device', message: event.error };
        void this.loadDevices();
        return;
      default:
        return;
    }
  }

  live(update: LiveUpdate): void {
    if (update.kind === 'microphone_level') this.meter = update.level;
  }
}
