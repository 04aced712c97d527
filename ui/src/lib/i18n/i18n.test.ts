// Unit tests: both dictionaries complete and consistent, and t() filling placeholders.

import { describe, expect, test } from 'vitest';
import type { CallResult } from '../bindings/CallResult';
import type { EndReason } from '../bindings/EndReason';
import type { ErrorCode } from '../bindings/ErrorCode';
import type { NotConnectedReason } from '../bindings/NotConnectedReason';
import { en } from './en';
import { currentLanguage, dictionaries, hasKey, LANGUAGES, setLanguage, t } from './index.svelte';
import { zh } from './zh';

const placeholders = (text: string) => [...text.matchAll(/\{(\w+)\}/g)].map((m) => m[1]).sort();

describe('i18n', () => {
  test('both languages have exactly the same keys, none empty', () => {
    expect(Object.keys(zh).sort()).toEqual(Object.keys(en).sort());
    for (const language of LANGUAGES) {
      for (const [key, text] of Object.entries(dictionaries[language])) expect(text.trim(), `${language} ${key}`).not.toBe('');
    }
  });

  test('translations use the same placeholders as English', () => {
    for (const key of Object.keys(en) as (keyof typeof en)[]) expect(placeholders(zh[key]), key).toEqual(placeholders(en[key]));
  });

  test('Chinese is translated, not copied (beyond names and codes)', () => {
    const same = (Object.keys(en) as (keyof typeof en)[]).filter((k) => en[k] === zh[k]);
    expect(same.sort()).toEqual(['app.name', 'lang.en', 'lang.zh', 'settings.version']);
  });

  test('every code and reason the engine sends has words', () => {
    const codes: ErrorCode[] = [
      'bad_request', 'payload_too_large', 'unsupported', 'unsupported_version', 'unauthorized', 'token_expired', 'not_found',
      'forbidden', 'invalid_state', 'too_many_participants', 'rate_limited', 'internal', 'user_exists', 'registration_closed', 'bad_credentials',
    ];
    const appCodes = [
      'not_signed_in', 'wrong_state', 'bad_argument', 'timed_out', 'engine_stopped', 'settings_io',
      'ringtone_missing', 'ringtone_unreadable', 'ringtone_undecodable', 'ringtone_unknown', 'no_device',
      'forbidden_by_policy', 'ringtone_forbidden',
    ];
    // Protocol codes a person can meet from this UI, plus all of the app's own.
    const shown = codes.filter((c) => !['payload_too_large', 'unsupported'].includes(c));
    for (const code of [...shown, ...appCodes]) expect(hasKey(`error.${code}`), code).toBe(true);
    const results: CallResult[] = ['completed', 'missed', 'declined', 'busy', 'cancelled', 'no_answer', 'failed'];
    for (const r of results) expect(hasKey(`result.${r}`), r).toBe(true);
    const reasons: (EndReason | NotConnectedReason)[] = ['hangup', 'cancelled', 'rejected', 'busy', 'no_answer', 'failed', 'handled_elsewhere'];
    for (const r of reasons) expect(hasKey(`end.${r}`), r).toBe(true);
  });

  test('t fills placeholders and follows the language', () => {
    setLanguage('en');
    expect(t('contacts.selected', { count: 3 })).toBe('3 selected');
    expect(t('join.many', { count: 4 })).toBe('4 people are in a call');
    setLanguage('zh');
    expect(t('contacts.selected', { count: 3 })).toBe('已选 3 人');
    setLanguage('fr');
    expect(currentLanguage()).toBe('en');
    expect(t('nav.recents')).toBe('Recents');
    expect(t('contacts.selected')).toBe('{count} selected');
  });
});
