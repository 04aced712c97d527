// A tiny i18n module: the current language as reactive state, and `t(key, params)` to look up a
// sentence. Components call `t` in their markup, so a language change redraws them.

import { en, type MessageKey } from './en';
import { zh } from './zh';

export type Language = 'en' | 'zh';
export const LANGUAGES: readonly Language[] = ['en', 'zh'];

export const dictionaries: Record<Language, Record<MessageKey, string>> = { en, zh };

class LanguageState {
  current = $state<Language>('en');
}

const language = new LanguageState();

/** Switches the UI's language; anything but a known code falls back to English. */
export function setLanguage(code: string): void {
  language.current = (LANGUAGES as readonly string[]).includes(code) ? (code as Language) : 'en';
  if (typeof document !== 'undefined') document.documentElement.lang = language.current === 'zh' ? 'zh-CN' : 'en';
}

export function currentLanguage(): Language {
  return language.current;
}

/** The BCP 47 locale for dates and times. */
export function currentLocale(): string {
  return language.current === 'zh' ? 'zh-CN' : 'en-GB';
}

export function hasKey(key: string): key is MessageKey {
  return Object.prototype.hasOwnProperty.call(en, key);
}

/** The sentence for `key` in the current language, with `{placeholders}` filled from `params`. */
export function t(key: MessageKey, params?: Record<string, string | number>): string {
  const text = dictionaries[language.current][key] ?? en[key];
  if (!params) return text;
  return text.replace(/\{(\w+)\}/g, (whole, name: string) => (name in params ? String(params[name]) : whole));
}
