// Unit tests: everything thrown becomes an ApiError, and codes map to words.

import { describe, expect, test } from 'vitest';
import type { ApiCode } from './bindings/ApiCode';
import { errorKey, isApiError, toApiError, UNKNOWN } from './errors';

describe('error mapping', () => {
  test('an ApiError passes through, extra fields dropped', () => {
    expect(toApiError({ code: 'not_found', message: 'no such user', extra: 1 })).toEqual({ code: 'not_found', message: 'no such user' });
  });

  test('strings, Errors and anything else become unknown', () => {
    expect(toApiError('Command foo not found')).toEqual({ code: UNKNOWN, message: 'Command foo not found' });
    expect(toApiError(new Error('boom'))).toEqual({ code: UNKNOWN, message: 'boom' });
    expect(toApiError(undefined)).toEqual({ code: UNKNOWN, message: 'undefined' });
    expect(toApiError({ code: 5, message: 'x' }).code).toBe(UNKNOWN);
  });

  test('isApiError wants both fields as strings', () => {
    expect(isApiError({ code: 'x', message: 'y' })).toBe(true);
    expect(isApiError({ code: 'x' })).toBe(false);
    expect(isApiError(null)).toBe(false);
  });

  test('codes map to their own sentence, unknown ones to a generic one', () => {
    expect(errorKey('unauthorized')).toBe('error.unauthorized');
    expect(errorKey('user_exists')).toBe('error.user_exists');
    expect(errorKey('registration_closed')).toBe('error.registration_closed');
    // What the administrator's policy forbids has its own words, not "something went wrong".
    expect(errorKey('forbidden_by_policy')).toBe('error.forbidden_by_policy');
    expect(errorKey('ringtone_forbidden')).toBe('error.ringtone_forbidden');
    // A code from a newer server than this build knows.
    expect(errorKey('brand_new_code' as ApiCode)).toBe('error.unknown');
    expect(errorKey(UNKNOWN)).toBe('error.unknown');
  });
});
