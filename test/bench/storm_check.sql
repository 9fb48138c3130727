-- Benchmark 2 results, one line: min and max bookings per slot, slots not
-- booked exactly once, double bookings (overlapping active appointments of
-- one provider), replies (all, told booked, told gone, other), busy slots.
\set ON_ERROR_STOP 1
SELECT value AS org FROM bench.setting WHERE name = 'storm_org' \gset
WITH per_slot AS (
  SELECT s.id, count(a.id) AS c
    FROM prm.slot s
    LEFT JOIN prm.appointment a ON a.org_id = s.org_id AND a.slot_id = s.id
                               AND a.status NOT IN ('cancelled', 'entered-in-error')
   WHERE s.org_id = :org GROUP BY s.id),
double AS (
  SELECT count(*) AS n
    FROM prm.appointment a JOIN prm.appointment b
      ON b.org_id = a.org_id AND b.provider_id = a.provider_id AND b.id > a.id
     AND tstzrange(a.starts_at, a.ends_at) && tstzrange(b.starts_at, b.ends_at)
   WHERE a.org_id = :org
     AND a.status IN ('proposed', 'pending', 'booked', 'arrived', 'checked-in', 'fulfilled')
     AND b.status IN ('proposed', 'pending', 'booked', 'arrived', 'checked-in', 'fulfilled')),
replies AS (
  SELECT count(*) AS n,
         count(*) FILTER (WHERE reply LIKE '%you are booked%') AS booked,
         count(*) FILTER (WHERE reply LIKE '%has just been taken%') AS gone
    FROM prm.inbound_message WHERE org_id = :org AND provider_message_id NOT LIKE 'SMhist%')
SELECT (SELECT min(c) FROM per_slot), (SELECT max(c) FROM per_slot),
       (SELECT count(*) FILTER (WHERE c <> 1) FROM per_slot),
       (SELECT n FROM double),
       r.n, r.booked, r.gone, r.n - r.booked - r.gone,
       (SELECT count(*) FROM prm.slot WHERE org_id = :org AND status = 'busy')
  FROM replies r;
