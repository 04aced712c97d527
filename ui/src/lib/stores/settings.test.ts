// Unit tests: saving settings, custom ringtones, preview and device events, the meter.

import { describe, expect, test } from 'vitest';
import type { Settings } from '../bindings/Settings';
import { fakeBackend } from '../testing/fakeBackend';
import { customRingtone, DEFAULT_SETTINGS, parseRingtone, SettingsStore } from './settings.svelte';

describe('settings', () => {
  test('ringtone sources', () => {
    expect(parseRingtone('bundled:classic')).toEqual({ kind: 'bundled', name: 'classic' });
    expect(parseRingtone('custom:/home/me/ring.ogg')).toEqual({ kind: 'custom', path: '/home/me/ring.ogg' });
    expect(parseRingtone('custom:C:\\ring:1.wav')).toEqual({ kind: 'custom', path: 'C:\\ring:1.wav' });
    expect(customRingtone('  /tmp/a.wav ')).toBe('custom:/tmp/a.wav');
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
          throw { code: 'ringtone_missing', message: 'no file' };
        },
      }),
    );
    expect(await store.useRingtoneFile('/nope.ogg')).toBe(false);
    expect(store.value.ringtone).toBe('bundled:classic');
    expect(store.error?.code).toBe('ringtone_missing');
  });

  test('a typed path and a chosen file both become custom ringtones', async () => {
    const backend = fakeBackend({ chooseRingtoneFile: async () => '/music/ring.ogg' });
    const store = new SettingsStore(backend);
    expect(await store.useRingtoneFile('/tmp/bell.wav')).toBe(true);
    expect(store.ringtone).toEqual({ kind: 'custom', path: '/tmp/bell.wav' });
    expect(await store.chooseRingtoneFile()).toBe('/music/ring.ogg');
    expect(store.value.ringtone).toBe('custom:/music/ring.ogg');
    expect(await store.useRingtoneFile('  ')).toBe(false);
  });

  test('a cancelled file dialog changes nothing', async () => {
    const store = new SettingsStore(fakeBackend());
    expect(await store.chooseRingtoneFile()).toBeNull();
    expect(store.value.ringtone).toBe('bundled:classic');
  });

  test('preview, ringtone and device events, and the meter', async () => {
    const backend = fakeBackend();
    const store = new SettingsStore(backend);
    await store.save({ ringtone: 'bundled:chime' });
    await store.preview();
    expect(backend.callsOf('previewRingtone')).toEqual([['bundled:chime']]);
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
    expect(store.microphones.map((d) => d.id)).toEqual(['alsa:mic']);
    expect(store.speakers.map((d) => d.id)).toEqual(['alsa:spk']);
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
