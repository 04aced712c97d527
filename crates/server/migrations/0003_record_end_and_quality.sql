-- How a connected person's part of a call ended (`hangup` or `failed`), as `call.ended` says it;
-- NULL for people who never connected and for records kept before this.
ALTER TABLE call_records ADD COLUMN end_reason TEXT;

-- How the call sounded to that person (MOS, 1 to 4.5), when their client said (`call.quality`).
ALTER TABLE call_records ADD COLUMN mos_average REAL;
ALTER TABLE call_records ADD COLUMN mos_worst REAL;
