// Recent calls: the list (newest first, as the server keeps it), the All / Missed tabs, deleting
// entries and clearing the list.

import type { ApiError } from '../bindings/ApiError';
import type { CallRecord } from '../bindings/CallRecord';
import type { Backend } from '../backend';
import { toApiError } from '../errors';

export type HistoryTab = 'all' | 'missed';

export type HistoryBackend = Pick<Backend, 'history' | 'deleteHistory' | 'clearHistory'>;

export function isMissed(record: CallRecord): boolean {
  return record.direction === 'incoming' && record.result === 'missed';
}

/** The other people of a call, from `me`'s side: whom we called, or who called us and who else was invited. */
export function otherParty(record: CallRecord, me: string): string[] {
  const everyone = [record.caller, ...record.invitees];
  return [...new Set(everyone)].filter((u) => u !== me);
}

/** Redial is offered for 1:1 calls only. */
export function redialTarget(record: CallRecord, me: string): string | null {
  const others = otherParty(record, me);
  return others.length === 1 ? others[0]! : null;
}

export class HistoryStore {
  records = $state<CallRecord[]>([]);
  loaded = $state(false);
  tab = $state<HistoryTab>('all');
  error = $state<ApiError | null>(null);

  /** Missed calls that started before this (Unix ms) have been seen. */
  seenBefore = $state(0);

  visible = $derived(this.tab === 'missed' ? this.records.filter(isMissed) : this.records);
  missedCount = $derived(this.records.filter(isMissed).length);
  /** Missed calls not seen yet: the navigation's badge. */
  unseenMissed = $derived(this.records.filter((r) => isMissed(r) && r.started_at >= this.seenBefore).length);

  constructor(private readonly backend: HistoryBackend) {}

  /** Everything up to `now` has been seen (the Recents page was opened). */
  markSeen(now: number): void {
    this.seenBefore = Math.max(this.seenBefore, now);
  }

  async load(): Promise<void> {
    try {
      this.records = await this.backend.history();
      this.loaded = true;
    } catch (thrown) {
      this.error = toApiError(thrown);
    }
  }

  async remove(callId: string): Promise<void> {
    try {
      await this.backend.deleteHistory([callId]);
      this.records = this.records.filter((r) => r.call_id !== callId);
    } catch (thrown) {
      this.error = toApiError(thrown);
    }
  }

  async clear(): Promise<void> {
    try {
      await this.backend.clearHistory();
      this.records = [];
    } catch (thrown) {
      this.error = toApiError(thrown);
    }
  }
}
