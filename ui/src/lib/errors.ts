// Turns whatever a backend call threw into an `ApiError`, and an error code into words.
//
// The Rust side rejects every command with `{code, message}`, the code one of the string literals
// generated from Rust (`ApiCode`); Tauri itself may reject with a bare string (an unknown command,
// a missing permission) and JavaScript with an `Error`, which get `unknown`. The UI only ever
// switches on `code`, so everything is folded into that one shape here.

import type { ApiCode } from './bindings/ApiCode';
import type { ApiError } from './bindings/ApiError';
import type { AppErrorCode } from './bindings/AppErrorCode';
import type { MessageKey } from './i18n/en';
import { hasKey } from './i18n/index.svelte';

/** The code used when what was thrown carries none. */
export const UNKNOWN: AppErrorCode = 'unknown';

export function isApiError(value: unknown): value is ApiError {
  return (
    typeof value === 'object' &&
    value !== null &&
    typeof (value as { code?: unknown }).code === 'string' &&
    typeof (value as { message?: unknown }).message === 'string'
  );
}

export function toApiError(thrown: unknown): ApiError {
  if (isApiError(thrown)) return { code: thrown.code, message: thrown.message };
  if (typeof thrown === 'string') return { code: UNKNOWN, message: thrown };
  if (thrown instanceof Error) return { code: UNKNOWN, message: thrown.message };
  return { code: UNKNOWN, message: String(thrown) };
}

/** The i18n key that explains `code` to a person; unknown codes get a generic sentence. */
export function errorKey(code: ApiCode): MessageKey {
  const key = `error.${code}`;
  return hasKey(key) ? key : 'error.unknown';
}
