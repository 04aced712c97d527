// Unit tests: saving settings, custom ringtones, preview and device events, the meter.

import { describe, expect, test } from 'vitest';
import type { Settings } from '../bindings/Settings';
import { fakeBackend } from '../testing/fakeBackend';
import { cameraChoices, customRingtone, DEFAULT_SETTINGS, deviceChoices, fileName, ringtoneChoices, ringtoneFromKey, SettingsStore } from './settings.svelte';

const CLASSIC = { kind: 'bundled', name: 'classic' } as const;
const CHIME = { kind: 'bundled', name: 'chime' } as const;

describe('settings', () => {
  test('a typed path is a custom ringtone', () => {
    expect(customRingtone('  /tmp/a.wav ')).toEqual({ kind: 'custom', path: '/tmp/a.wav' });
    expect(customRingtone('C:\\ring:1.wav')).toEqual({ kind: 'custom', path: 'C:\\ring:1.wav' });
  });

  test('the ringtone picker always lists and selects the current setting', () => {
    const bundled = [
      { source: CLASSIC, name: 'classic' },
      { source: CHIME, name: 'chime' },
    ];
    const selected = (choices: { value: string; selected: boolean }[]) => choices.filter((c) => c.selected).map((c) => c.value);
    expect(ringtoneChoices(bundled, CHIME).map((c) => c.value)).toEqual(['bundled:classic', 'bundled:chime']);
    expect(selected(ringtoneChoices(bundled, CHIME))).toEqual(['bundled:chime']);
    // A file of one's own: one more entry, named by its file, selected.
    const mine = customRingtone('/tmp/.tmpA1/my ringtone.wav');
    const custom = ringtoneChoices(bundled, mine);
    expect(custom).toHaveLength(3);
    expect(custom[2]).toEqual({ value: 'custom:/tmp/.tmpA1/my ringtone.wav', label: 'my ringtone.wav', selected: true, custom: true, title: '/tmp/.tmpA1/my ringtone.wav' });
    expect(selected(custom)).toEqual(['custom:/tmp/.tmpA1/my ringtone.wav']);
    // A picked entry is its setting again.
    expect(ringtoneFromKey(bundled, mine, 'bundled:chime')).toEqual(CHIME);
    expect(ringtoneFromKey(bundled, mine, custom[2].value)).toEqual(mine);
    // Bundled names not loaded (yet, or the command failed): the setting is still shown.
    expect(ringtoneChoices([], CLASSIC)).toEqual([{ value: 'bundled:classic', label: 'classic', selected: true }]);
    expect(fileName('C:\\Users\\me\\ring.ogg')).toBe('ring.ogg');
    expect(fileName('/a/b/')).toBe('b');
    expect(fileName('ring.ogg')).toBe('ring.ogg');
  });

  test('a device picker starts with the system default, selected while the setting is null', () => {
    const devices = [
      { id: 'alsa:default', name: 'Default', direction: 'input' as const, is_default: true },
      { id: 'alsa:usb', name: 'USB headset', direction: 'input' as const, is_default: false },
      { id: 'alsa:default', name: 'Default', direction: 'output' as const, is_default: true },
    ];
    // No sound card at all (or the list failed): the default is still offered and selected.
    expect(deviceChoices([], 'input', null)).toEqual([{ value: '', label: '', selected: true }]);
    expect(deviceChoices(devices, 'input', null).map((c) => [c.value, c.selected])).toEqual([
      ['', true],
      ['alsa:default', false],
      ['alsa:usb', false],
    ]);
    expect(deviceChoices(devices, 'output', 'alsa:default').map((c) => [c.value, c.selected])).toEqual([
      ['', false],
      ['alsa:default', true],
    ]);
    // A chosen device that is gone stays listed and selected, marked missing.
    expect(deviceChoices([], 'output', 'alsa:usb')).toEqual([
      { value: '', label: '', selected: false },
      { value: 'alsa:usb', label: 'alsa:usb', selected: true, missing: true },
    ]);
  });

  test('save sends the whole settings and keeps what Rust returns', async () => {
    const backend = fakeBackend({ saveSettings: async (s: Settings) => ({ ...s, ringtone_volume: 50 }) });
    const store = new SettingsStore(backend);
    expect(await store.save({ ringtone_volume: 55, theme: 'dark' })).toBe(true);
    expect(backend.callsOf('saveSettings')).toEqual([[{ ...DEFAULT_SETTINGS, ringtone_volume: 55, theme: 'dark' }]]);
    expect(store.value.ringtone_volume).toBe(50);
    expect(store.value.theme).toBe('dark');
    expect(store.saves).toBe(1);
  });

  test('a refused save puts the old values back', async () => {
    const store = new SettingsStore(
      fakeBackend({
        saveSettings: async () => {
          throw { code: 'ringtone_unreadable', message: 'no file' };
        },
      }),
    );
    expect(await store.useRingtoneFile('/nope.ogg')).toBe(false);
    expect(store.value.ringtone).toEqual(CLASSIC);
    expect(store.error?.code).toBe('ringtone_unreadable');
  });

  test('a typed path and a chosen file both become custom ringtones', async () => {
    const backend = fakeBackend({ chooseRingtoneFile: async () => '/music/ring.ogg' });
    const store = new SettingsStore(backend);
    expect(await store.useRingtoneFile('/tmp/bell.wav')).toBe(true);
    expect(store.value.ringtone).toEqual({ kind: 'custom', path: '/tmp/bell.wav' });
    expect(await store.chooseRingtoneFile()).toBe('/music/ring.ogg');
    expect(store.value.ringtone).toEqual({ kind: 'custom', path: '/music/ring.ogg' });
    expect(await store.useRingtoneFile('  ')).toBe(false);
  });

  test('a cancelled file dialog changes nothing', async () => {
    const store = new SettingsStore(fakeBackend());
    expect(await store.chooseRingtoneFile()).toBeNull();
    expect(store.value.ringtone).toEqual(CLASSIC);
  });

  test('preview, ringtone and device events, and the meter', async () => {
    const backend = fakeBackend();
    const store = new SettingsStore(backend);
    await store.save({ ringtone: CHIME });
    await store.preview();
    expect(backend.callsOf('previewRingtone')).toEqual([[CHIME]]);
    store.handle({ event: 'ringtone_playing', kind: 'incoming', source: 'bundled:chime' });
    expect(store.playing).toBe('bundled:chime');
    store.handle({ event: 'ringtone_stopped' });
    expect(store.playing).toBeNull();
    store.handle({ event: 'ringtone_failed', code: 'ringtone_undecodable', message: 'bad' });
    expect(store.error?.code).toBe('ringtone_undecodable');
    store.handle({
      event: 'device_list_changed',
      devices: [
        { id: 'alsa:mic', name: 'Mic', direction: 'input', is_default: true },
        { id: 'alsa:spk', name: 'Speaker', direction: 'output', is_default: true },
      ],
    });
    expect(deviceChoices(store.devices, 'input', null).map((c) => c.value)).toEqual(['', 'alsa:mic']);
    expect(deviceChoices(store.devices, 'output', null).map((c) => c.value)).toEqual(['', 'alsa:spk']);
    store.handle({ event: 'device_fallback', direction: 'input', error: null });
    expect(store.error?.code).toBe('ringtone_undecodable');
    store.handle({ event: 'device_fallback', direction: 'output', error: 'no card' });
    expect(store.error).toEqual({ code: 'no_device', message: 'no card' });
    expect(backend.callsOf('devices')).toHaveLength(2);
    store.live({ kind: 'microphone_level', level: 64 });
    store.live({ kind: 'level', user: 'me', level: 10 });
    expect(store.meter).toBe(64);
    await store.meterOn(false);
    expect(store.meter).toBe(0);
    expect(backend.callsOf('microphoneMeter')).toEqual([[false]]);
  });
});

describe('cameras', () => {
  test('the picker: the default, each camera, and a chosen one that is unplugged', () => {
    const cameras = [
      { index: 0, name: 'Integrated Camera' },
      { index: 2, name: 'USB Webcam' },
    ];
    expect(cameraChoices(cameras, null).map((c) => [c.value, c.selected])).toEqual([
      ['', true],
      ['0', false],
      ['2', false],
    ]);
    expect(cameraChoices(cameras, 2).find((c) => c.selected)?.label).toBe('USB Webcam');
    const unplugged = cameraChoices([cameras[0]], 2).find((c) => c.selected);
    expect(unplugged).toMatchObject({ value: '2', missing: true });
  });

  test('hot-plug updates the list; the preview asks the engine', async () => {
    const backend = fakeBackend({ cameras: async () => [{ index: 0, name: 'Integrated Camera' }] });
    const settings = new SettingsStore(backend);
    await settings.loadCameras();
    expect(settings.cameras).toHaveLength(1);
    settings.handle({ event: 'camera_list_changed', cameras: [] });
    expect(settings.cameras).toEqual([]);
    await settings.cameraPreview(true);
    await settings.cameraPreview(false);
    expect(backend.callsOf('previewCamera')).toEqual([[true], [false]]);
  });
});
